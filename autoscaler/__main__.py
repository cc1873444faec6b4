"""`sluice-autoscaler` / `python -m autoscaler`: parses the environment and wires `AutoscalerApp`.

Environment (CONTRACT.md §4.1): `POD_NAME`, `POD_IP`, `SYSTEM_NAMESPACE` (all required),
`CONFIG_LOGGING_NAME` (default `config-logging`), `CONFIG_OBSERVABILITY_NAME`, `CLUSTER_DOMAIN`.
Kubernetes access: in-cluster when `KUBERNETES_SERVICE_HOST` is set, else the kubeconfig named
by `SLUICE_KUBECONFIG` (wins over in-cluster) or `KUBECONFIG` (else ~/.kube/config).

Sluice overrides, for running without a cluster network (`sluice local`, tests):
- `SLUICE_STAT_SERVER_HOST` / `SLUICE_STAT_SERVER_PORT`  stat server bind (0.0.0.0:8080)
- `SLUICE_SCRAPE_PORT`               queue-proxy stats port scraped on each pod IP (9090)
- `SLUICE_ACTIVATOR_PROBE_URL`       activator probe URL template ({service} {namespace} {port}
                                      {cluster_domain}), instead of the service DNS name
- `SLUICE_ACTIVATOR_PROBE_ENDPOINTS` `true`: probe the public service's first Endpoints address
- `SLUICE_FORWARD_PORT`              port of the other replicas' stat servers (8080)
- `SLUICE_LEADER_ELECTION`           `false`: act on every revision without leases (one replica only)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from sluice import aio
from sluice.config import ConfigError, Reader, cluster_domain
from sluice.logs import configure_logging

from .app import AutoscalerApp, Options
from .kube import load_api_client
from .scraper import METRICS_PORT
from .statserver import STAT_SERVER_PORT
from .telemetry import DEFAULT_DEBUG_PORT

__all__ = ["main", "options_from_env", "run"]

logger = logging.getLogger("autoscaler")


def options_from_env(environ: Mapping[str, str]) -> Options:
    """Raises `ConfigError` naming every missing or malformed variable."""
    r = Reader(environ)
    opts = Options(
        pod_name=r.str("POD_NAME", required=True),
        pod_ip=r.str("POD_IP", required=True),
        system_namespace=r.str("SYSTEM_NAMESPACE", required=True),
        config_logging_name=r.str("CONFIG_LOGGING_NAME", "config-logging") or "config-logging",
        cluster_domain=cluster_domain(environ),
        stat_host=r.str("SLUICE_STAT_SERVER_HOST", "0.0.0.0") or "0.0.0.0",
        stat_port=r.port("SLUICE_STAT_SERVER_PORT", STAT_SERVER_PORT),
        scrape_port=r.port("SLUICE_SCRAPE_PORT", METRICS_PORT),
        activator_probe_url=r.str("SLUICE_ACTIVATOR_PROBE_URL") or None,
        activator_probe_endpoints=r.bool("SLUICE_ACTIVATOR_PROBE_ENDPOINTS", False),
        forward_port=r.port("SLUICE_FORWARD_PORT", STAT_SERVER_PORT),
        leader_election=r.bool("SLUICE_LEADER_ELECTION", True),
        debug_address=r.str("SLUICE_DEBUG_ADDRESS", f"127.0.0.1:{DEFAULT_DEBUG_PORT}"),
        debug_token=r.str("SLUICE_DEBUG_TOKEN"),
        extra={k: v for k, v in environ.items() if k == "OTEL_SERVICE_NAME"},
    )
    for key in ("POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"):
        if key in environ and not environ[key]:
            r.fail(key, "must not be empty")
    r.check()
    return opts


async def run(environ: Mapping[str, str], options: Options) -> int:
    try:
        api_client = await load_api_client(environ)
    except Exception as exc:
        logger.error("cannot configure the Kubernetes client: %s", exc)
        return 1
    app = AutoscalerApp(api_client, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            start = asyncio.ensure_future(app.start())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([start, stopped], return_when=asyncio.FIRST_COMPLETED)
            if start.done():
                start.result()  # raise start-up errors (e.g. the stat port is taken)
                await stopped
            else:
                start.cancel()
        except OSError as exc:
            logger.error("failed to start: %s", exc)
            return 1
        logger.info("received a termination signal, shutting down")
        await app.stop()
        return 0
    finally:
        await api_client.close()


def main() -> None:
    environ = dict(os.environ)
    try:
        options = options_from_env(environ)
    except ConfigError as exc:
        print(f"sluice-autoscaler: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging("autoscaler", logging.INFO, {"knative.dev/pod": options.pod_name})
    sys.exit(aio.run(run(environ, options)))


if __name__ == "__main__":
    main()
