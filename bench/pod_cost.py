"""Per-pod cost of the queue-proxy (issue 19, target 1): ready-to-serve time and idle memory.

Starts `python -m proxy` N times per variant with the environment the reconciler gives a pod
(the same as `proxy_bench.py`'s `qp_env`), and for each start records:

  ready_ms   spawn → the first 200 `queue` to a kubelet probe on the serving port (polled
             every --poll-ms, default 2 ms: a finer poll than proxy_bench's 5 ms, since the
             target is 50 ms). Wall time: inflated by whatever else runs on the machine.
  cpu_ms     the process's CPU time (all threads) from exec to that first 200, from
             /proc/<pid>/task/*/schedstat (nanoseconds: not the 10 ms tick of /proc/<pid>/stat).
             Much less sensitive to other load than ready_ms: the figure to compare across runs.
  rss_mb     VmRSS after --idle-s (default 0.5 s) idle past ready. MB = MiB.
  uss_mb     the private part of it (Private_Clean + Private_Dirty from smaps_rollup): what a
             second pod on the same node adds when the image's files are shared in the page cache.
  modules    (--modules) len(sys.modules) after the proxy's listeners opened, counted in a
             separate interpreter so the measured starts stay untouched, with the optional
             modules (ssl, h2, json, email, ...) that were loaded.

Variants (--variants, comma separated): `default` (no TLS files, no metrics, no request log),
`tls` (a self-signed cert in SLUICE_CERT_DIR: the TLS listener is opened), `metrics`
(requestMetrics: prometheus on a free port), `requestlog` (enableRequestLog with Knative's default
template). The upstream is a bare TCP listener in this process (the default readiness probe is a
TCP probe of the user port, CONTRACT.md §2.7).

Usage (from the repository root; the proxy runs under .venv/bin/python unless --python):

  python bench/pod_cost.py [--runs 30] [--variants default,tls,metrics,requestlog]
                           [--python PATH] [--extra-env K=V ...] [--modules]

Before measuring it byte-compiles sluice/ and proxy/ (as the image build does), so a source edited
since its last .pyc is not compiled again at every start; --no-compile skips that.

Prints one line per variant: median and p95 of each figure, min/max of ready_ms. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import LOOPBACK, PROBE_HEADERS, REPO, free_ports, qp_env, qp_python  # a sibling script


def schedstat_ns(pid: int) -> int:
    """CPU time of every thread of `pid`, in ns (the first field of each task's schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between listdir and open
    return total


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Private_Clean + Private_Dirty) of `pid` in kB."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    private = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1])
    return rss, private


def probe_once(port: int) -> bool:
    """One kubelet-style probe (§1.3); True on 200 `queue`."""
    request = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in PROBE_HEADERS.items())
        + "Connection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"queue")


class Upstream:
    """A TCP listener that accepts and closes: enough for the default TCP readiness probe."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


def self_signed(directory: Path) -> None:
    """tls.crt / tls.key for the queue-proxy's TLS listener, made as `sluice local` makes its own."""
    from sluice.local.kubeapi.tls import ensure_self_signed

    cert, key = ensure_self_signed(directory, "localhost")
    cert.rename(directory / "tls.crt")
    key.rename(directory / "tls.key")


def variant_env(variant: str, base: dict[str, str], tmp: Path, metrics_port: int) -> dict[str, str]:
    env = dict(base)
    env["SLUICE_CERT_DIR"] = str(tmp / "no-certs")  # the default: no TLS files (§2.3)
    if variant == "tls":
        env["SLUICE_CERT_DIR"] = str(tmp / "certs")
    elif variant == "metrics":
        env["OBSERVABILITY_CONFIG"] = json.dumps(
            {"requestMetrics": {"protocol": "prometheus", "endpoint": f"{LOOPBACK}:{metrics_port}"}}
        )
    elif variant == "requestlog":
        env["OBSERVABILITY_CONFIG"] = json.dumps({"enableRequestLog": True})
    elif variant != "default":
        raise SystemExit(f"unknown variant {variant!r}")
    return env


def one_run(python: str, env: dict[str, str], port: int, poll_s: float, idle_s: float) -> tuple[float, float, int, int]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [python, "-m", "proxy"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = started + 20.0
        while not probe_once(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"queue-proxy exited with {proc.returncode}:\n{err[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("queue-proxy not ready within 20 s")
            time.sleep(poll_s)
        ready_ms = (time.monotonic() - started) * 1000.0
        cpu_ms = schedstat_ns(proc.pid) / 1e6
        time.sleep(idle_s)
        rss, uss = memory_kb(proc.pid)
        return ready_ms, cpu_ms, rss, uss
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]  # nearest rank


def count_modules(python: str, env: dict[str, str]) -> str:
    """sys.modules after building the process object (what the listeners need), in a fresh interpreter."""
    code = (
        "import sys, os, asyncio\n"
        "from proxy.__main__ import QueueProxyProcess\n"
        "from proxy.config import QueueProxyConfig\n"
        "from proxy.observability import ObservabilityConfig\n"
        "async def m():\n"
        "    cfg = QueueProxyConfig.from_env(os.environ)\n"
        "    p = QueueProxyProcess(cfg, None, ObservabilityConfig.from_json(cfg.observability_config))\n"
        "    await p.start(); await p.close()\n"
        "from sluice import aio\n"
        "aio.run(m())\n"
        "mods = sorted(sys.modules)\n"
        "print(len(mods), ' '.join(m for m in mods if m.split('.')[0] in "
        "('ssl','_ssl','h2','hpack','hyperframe','json','email','http','urllib','logging','concurrent','hashlib')))\n"
    )
    out = subprocess.run([python, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()[-500:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--variants", default="default,tls,metrics,requestlog")
    ap.add_argument("--python", default=None, help="interpreter for the proxy (default .venv/bin/python)")
    ap.add_argument("--poll-ms", type=float, default=2.0)
    ap.add_argument("--idle-s", type=float, default=0.5)
    ap.add_argument("--extra-env", action="append", default=[], metavar="K=V", help="added to every start")
    ap.add_argument("--modules", action="store_true", help="also print the module count of each variant")
    ap.add_argument("--no-compile", action="store_true", help="skip the compileall step (see below)")
    args = ap.parse_args()
    python = qp_python(args.python)
    if not args.no_compile:
        # The proxy runs with PYTHONDONTWRITEBYTECODE=1 (a read-only image): a source edited since
        # its .pyc was written would be compiled on every start and counted. The image compiles
        # everything at build time (images/Dockerfile), so do the same here first.
        subprocess.run([python, "-m", "compileall", "-q", "sluice", "proxy"], cwd=REPO, check=True, timeout=300)
    upstream = Upstream()
    tmp = Path(tempfile.mkdtemp(prefix="pod-cost-"))
    try:
        (tmp / "certs").mkdir()
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        if "tls" in variants:
            self_signed(tmp / "certs")
        with open("/proc/loadavg") as f:
            load0 = f.read().split()[0]
        print(f"python={python} runs={args.runs} poll={args.poll_ms:g}ms idle={args.idle_s:g}s load={load0}")
        for variant in variants:
            ready, cpu, rss, uss = [], [], [], []
            for _ in range(args.runs):
                ports = free_ports(5)
                env = variant_env(variant, qp_env(upstream.port, 0, ports[:4]), tmp, ports[4])
                env.update(kv.split("=", 1) for kv in args.extra_env)
                r, c, m, u = one_run(python, env, ports[0], args.poll_ms / 1000.0, args.idle_s)
                ready.append(r)
                cpu.append(c)
                rss.append(m / 1024)
                uss.append(u / 1024)
            print(
                f"{variant:10s} ready_ms p50={statistics.median(ready):.1f} p95={pct(ready, 0.95):.1f} "
                f"min={min(ready):.1f} max={max(ready):.1f} | cpu_ms p50={statistics.median(cpu):.1f} "
                f"p95={pct(cpu, 0.95):.1f} | rss_mb p50={statistics.median(rss):.1f} max={max(rss):.1f} "
                f"| uss_mb p50={statistics.median(uss):.1f}",
                flush=True,
            )
            if args.modules:
                ports = free_ports(5)
                env = variant_env(variant, qp_env(upstream.port, 0, ports[:4]), tmp, ports[4])
                print(f"{'':10s} modules: {count_modules(python, env)}", flush=True)
        with open("/proc/loadavg") as f:
            print(f"load at end={f.read().split()[0]}")
    finally:
        upstream.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
