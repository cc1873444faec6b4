"""`python -m sluice.local.kubeapi --port N --data-dir D --kubeconfig PATH [--crd FILE ...]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from .crd import CRDError
from .embedded import EmbeddedAPIServer
from .tls import TLSError


class _JSONFormatter(logging.Formatter):
    # One JSON object per line with zap's field names (ARCHITECTURE.md, Conventions).
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "severity": record.levelname,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sluice.local.kubeapi", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=6443, help="listen port; 0 picks a free one")
    p.add_argument("--data-dir", type=Path, default=None, help="keep state in SQLite here (default: memory)")
    p.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig for this server here")
    p.add_argument(
        "--crd",
        action="append",
        type=Path,
        default=None,
        help="CRD YAML file or directory (repeatable); default: the Knative CRDs",
    )
    p.add_argument("--token", default=None, help="bearer token (default: random, kept in --data-dir)")
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="serve plain http (kubectl will not send the token; kubernetes-asyncio will)",
    )
    p.add_argument("--tls-cert", type=Path, default=None, help="serving certificate (default: self-signed)")
    p.add_argument("--tls-key", type=Path, default=None, help="key of --tls-cert")
    p.add_argument("--watch-history", type=int, default=10_000, help="events kept for watch resume")
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    server = EmbeddedAPIServer(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        crd_paths=args.crd,
        token=args.token,
        history_size=args.watch_history,
        tls=not args.insecure_http,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    await server.start()
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
    logging.getLogger("sluice.kubeapi").info("serving %s (kubeconfig %s)", server.url, args.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        asyncio.run(_run(args))
    except (CRDError, TLSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
