#!/usr/bin/env python3
"""Activator benchmark (issue 5): warm path, cold path, memory under back-pressure.

One run, three parts, everything on 127.0.0.1 (pods on other 127/8 addresses), every
process stopped in a ``finally``:

* **warm**: one revision, cc=0, one "pod" (nginx answering the activator probe with
  ``queue`` and requests with ``ok``). ``wrk -t1 -cN --latency`` against the pod
  itself (``direct``), nginx as a reverse proxy to it (``nginx``) and the activator
  (``activator``, ``python -m activator``); the proxies pinned to CPU 0, wrk and
  the pod to CPU 1. Targets: activator c=50 req/s ≥ 0.5 × nginx c=50; the added
  p50 at c=1 (``p50(target) − p50(direct)``) is reported.
* **cold**: ``--trials`` times: the revision has no pods, a request is sent and
  held; a not-ready pod appears (a fake queue-proxy answering the probe 503); once
  the activator is probing it, after a random 0–100 ms the pod turns ready. We
  record (a) first ``200 queue`` probe answer → held request arriving at the pod
  (the issue's definition, target p95 < 50 ms) and (b) the pod turning ready →
  request arriving (includes the probe cadence).
* **memory**: ``--bp-rate`` req/s (open loop, one connection each) for ``--bp-seconds``
  into a cc=2 revision whose one pod serves each request in 100 ms (20 req/s), with
  a 10 s revision timeout: the queue stays saturated; the activator's RSS is sampled
  every 5 s and must stay flat (last ≤ 1.2 × the one at 25 % of the run).
* **scale** (issue 19, not in the default parts): ``--scale-revisions`` revisions (default 5,000),
  each with its private Endpoints at zero pods (the state the activator holds them in), created
  through the API in batches; the activator's RSS before, and once it stopped growing (sampled
  every 2 s, settled when two samples are within 1 %), with its CPU time over the creation.
  Target: ≤ 200 MB at 5,000 revisions.

The embedded Kubernetes API and the autoscaler's websocket StatServer run inside
this process (pinned to CPU 1), the activator talks to them as in ``sluice local``.

    .venv/bin/python bench/activator_bench.py [--duration 10] [--trials 100]
        [--bp-rate 200] [--bp-seconds 60] [--parts warm,cold,memory] [--out FILE]
        [--scale-revisions 5000]   (with --parts scale)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import proxy_bench as pb  # noqa: E402  (stdlib-only helpers: wrk parsing, /proc, nginx, processes)

REV_WARM, REV_COLD, REV_BP = "warm-00001", "cold-00001", "bp-00001"
NS = "default"
PROXY_CPU, LOAD_CPU = 0, 1
TARGET_RPS_RATIO = 0.5
TARGET_COLD_P95_MS = 50.0


def headers_for(rev: str) -> dict[str, str]:
    return {"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": NS}


# ---- Kubernetes objects -------------------------------------------------------------------


def revision(name: str, cc: int, timeout: int = 300) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": name},
        "spec": {
            "containerConcurrency": cc,
            "timeoutSeconds": timeout,
            "containers": [{"name": "user-container", "image": "bench", "ports": [{"containerPort": 8080}]}],
        },
    }


def private_endpoints(rev: str, ready: Sequence[tuple[str, int]], not_ready: Sequence[tuple[str, int]] = ()) -> Any:
    subsets = [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": p}]} for ip, p in ready]
    subsets += [{"notReadyAddresses": [{"ip": ip}], "ports": [{"name": "http", "port": p}]} for ip, p in not_ready]
    return {
        "metadata": {
            "name": f"{rev}-private",
            "labels": {
                "serving.knative.dev/revision": rev,
                "serving.knative.dev/revisionUID": f"uid-{rev}",
                "networking.internal.knative.dev/serviceType": "Private",
            },
        },
        "subsets": subsets,
    }


class Cluster:
    """Embedded API + StatServer in this process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: Any = None
        self.api: Any = None
        self.core: Any = None
        self.custom: Any = None
        self.stats: Any = None
        self.kubeconfig = workdir / "kubeconfig"

    async def start(self) -> None:
        from kubernetes_asyncio import client

        from autoscaler.statserver import StatServer
        from sluice.local.kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig

        self.server = EmbeddedAPIServer(port=0, crd_paths=None)
        await self.server.start()
        self.server.write_kubeconfig(self.kubeconfig)
        self.api = await kube_client_from_kubeconfig(self.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.stats = StatServer(lambda key, stat, source: None)
        await self.stats.start("127.0.0.1", 0)

    async def create_revision(self, body: dict[str, Any]) -> None:
        await self.custom.create_namespaced_custom_object("serving.knative.dev", "v1", NS, "revisions", body)

    async def set_endpoints(self, body: dict[str, Any]) -> None:
        await self.core.replace_namespaced_endpoints(body["metadata"]["name"], NS, body)

    async def stop(self) -> None:
        if self.stats is not None:
            await self.stats.shutdown(budget=1.0)
        if self.api is not None:
            await self.api.close()
        if self.server is not None:
            await self.server.stop()


# ---- the fake queue-proxy (cold path, back-pressure) --------------------------------------


class FakeQP:
    """Probe answers like a QP (§1.3); requests answered after `delay` seconds."""

    def __init__(self, ip: str, delay: float = 0.0) -> None:
        from sluice.http.server import HttpServer

        self.ip = ip
        self.delay = delay
        self.ready = False
        self.probes = 0
        self.first_ok_probe: float | None = None
        self.arrivals: list[float] = []
        self.server = HttpServer(self)
        self.port = 0

    async def start(self) -> FakeQP:
        await self.server.listen(self.ip, 0)
        self.port = self.server.ports[0]
        return self

    def __call__(self, ex: Any) -> None:
        if (ex.header(b"user-agent") or b"").startswith(b"Knative-Activator-Probe"):
            self.probes += 1
            if self.ready:
                if self.first_ok_probe is None:
                    self.first_ok_probe = time.monotonic()
                ex.respond_text(200, b"queue")
            else:
                ex.respond_text(503, b"")
            return
        self.arrivals.append(time.monotonic())
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, ex.respond_text, 200, b"ok")
        else:
            ex.respond_text(200, b"ok")

    async def stop(self) -> None:
        self.server.stop_accepting()
        for conn in list(self.server.connections):
            conn.close()


async def raw_request(port: int, rev: str, timeout: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        h = "".join(f"{k}: {v}\r\n" for k, v in headers_for(rev).items())
        writer.write(f"GET / HTTP/1.1\r\nHost: bench.example.com\r\n{h}\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# ---- the activator process ---------------------------------------------------------------


def start_activator(procs: pb.Processes, tools: pb.Tools, cluster: Cluster, python: str) -> tuple[Any, int]:
    port, h2c = pb.free_ports(2)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    env.update(
        {
            "POD_NAME": "activator-bench",
            "POD_IP": "127.0.0.1",
            "SYSTEM_NAMESPACE": "knative-serving",
            "CLUSTER_DOMAIN": "cluster.local",
            "SLUICE_BIND_HOST": "127.0.0.1",
            "SLUICE_HTTP1_PORT": str(port),
            "SLUICE_H2C_PORT": str(h2c),
            "SLUICE_KUBECONFIG": str(cluster.kubeconfig),
            "SLUICE_AUTOSCALER_URL": f"ws://127.0.0.1:{cluster.stats.port}/",
            "SLUICE_DRAIN_SLEEP": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    argv = [tools.taskset, "-c", str(PROXY_CPU), python, "-m", "activator"]
    proc = procs.spawn("activator", argv, env=env, cwd=REPO)
    return proc, port


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise pb.BenchError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---- warm path ------------------------------------------------------------------------------


def pod_nginx_config(workdir: Path, port: int) -> str:
    d = workdir / "pod"
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
    uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            if ($http_k_network_probe = "queue") {{ return 200 "queue"; }}
            return 200 "ok";
        }}
    }}
}}
"""


def wrk(tools: pb.Tools, c: int, seconds: int, port: int, rev: str) -> pb.WrkResult:
    argv = [tools.taskset, "-c", str(LOAD_CPU), tools.wrk, "-t1", f"-c{c}", f"-d{seconds}s", "--latency"]
    for k, v in headers_for(rev).items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise pb.BenchError(f"{shlex.join(argv)} failed: {out.stdout}{out.stderr}")
    return pb.parse_wrk_output(out.stdout)


async def warm_part(
    args: argparse.Namespace, tools: pb.Tools, procs: pb.Processes, workdir: Path, cluster: Cluster, act_port: int,
    act_pid: int,
) -> list[str]:  # fmt: skip
    pod_port = pb.free_port()
    (workdir / "pod").mkdir()
    conf = workdir / "pod" / "nginx.conf"
    conf.write_text(pod_nginx_config(workdir, pod_port))
    procs.spawn("pod", [tools.taskset, "-c", str(LOAD_CPU), tools.nginx, "-p", f"{workdir}/pod/", "-c", str(conf)])
    proxy = await asyncio.to_thread(pb.start_nginx, procs, tools, workdir, "nginx-proxy", PROXY_CPU, pod_port)
    # The Sluice queue-proxy (cc=0) on the same engine: the reference for what the activator's
    # own rules (§3.5-§3.8) add on top of the shared forwarding path.
    qp = await asyncio.to_thread(pb.start_qp, procs, tools, args.python, "sluice-qp", PROXY_CPU, pod_port, 0, 10.0)
    await cluster.create_revision(revision(REV_WARM, cc=0))
    await cluster.set_endpoints(private_endpoints(REV_WARM, [("127.0.0.1", pod_port)]))

    async def through() -> bool:
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            return await raw_request(act_port, REV_WARM, 2.0) == 200
        return False

    await wait_until(through, 20, "the activator to forward to the warm pod")
    clk = os.sysconf("SC_CLK_TCK")
    rows: dict[tuple[str, int], tuple[pb.WrkResult, float]] = {}
    lines = ["| target | c | req/s | p50 (ms) | p99 (ms) | errors | CPU µs/req |", "|---|---|---|---|---|---|---|"]
    targets = (
        ("direct", pod_port, None),
        ("nginx", proxy.port, proxy.proc.pid),
        ("sluice-qp", qp.port, qp.proc.pid),
        ("activator", act_port, act_pid),
    )
    for name, port, pid in targets:
        for c in args.connections:
            await asyncio.to_thread(wrk, tools, c, 1, port, REV_WARM)  # warm-up
            before = pb.cpu_ticks(pid) if pid else 0
            res = await asyncio.to_thread(wrk, tools, c, args.duration, port, REV_WARM)
            cpu = pb.cpu_us_per_request(pb.cpu_ticks(pid) - before, res.requests, clk) if pid else float("nan")
            rows[(name, c)] = (res, cpu)
            line = (
                f"| {name} | {c} | {res.req_per_s:.0f} | {res.p50_us / 1000:.3f} | {res.p99_us / 1000:.3f} | "
                f"{res.error_text()} | {cpu:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
    cmax = max(args.connections)
    derived = []
    if ("activator", cmax) in rows and ("nginx", cmax) in rows:
        ratio = rows[("activator", cmax)][0].req_per_s / rows[("nginx", cmax)][0].req_per_s
        verdict = "PASS" if ratio >= TARGET_RPS_RATIO else "MISS"
        derived.append(
            f"- throughput c={cmax}: activator / nginx = {ratio:.2f} (target ≥ {TARGET_RPS_RATIO}) {verdict}"
        )
    if 1 in args.connections:
        base = rows[("direct", 1)][0].p50_us
        for name in ("nginx", "sluice-qp", "activator"):
            added = (rows[(name, 1)][0].p50_us - base) / 1000
            derived.append(f"- added p50 at c=1, {name}: {added:.3f} ms")
    return [*lines, "", *derived]


# ---- cold path --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def cold_part(args: argparse.Namespace, cluster: Cluster, act_port: int) -> list[str]:
    await cluster.create_revision(revision(REV_COLD, cc=0))
    await asyncio.sleep(0.5)
    rng = random.Random(5)
    from_probe: list[float] = []
    from_ready: list[float] = []
    failures = 0
    for i in range(args.trials):
        ip = f"127.0.{1 + i // 200}.{10 + i % 200}"
        qp = await FakeQP(ip).start()
        request = asyncio.ensure_future(raw_request(act_port, REV_COLD, 10.0))
        await asyncio.sleep(0.05)  # held (the revision has no pod)
        await cluster.set_endpoints(private_endpoints(REV_COLD, [], [(ip, qp.port)]))
        deadline = time.monotonic() + 5
        while qp.probes == 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling another component
            await asyncio.sleep(0.002)
        await asyncio.sleep(rng.uniform(0, 0.1))
        qp.ready = True
        flipped = time.monotonic()
        status = await request
        if status != 200 or not qp.arrivals or qp.first_ok_probe is None:
            failures += 1
        else:
            from_probe.append((qp.arrivals[0] - qp.first_ok_probe) * 1000)
            from_ready.append((qp.arrivals[0] - flipped) * 1000)
        await cluster.set_endpoints(private_endpoints(REV_COLD, []))  # scale to zero again
        await asyncio.sleep(0.25)
        await qp.stop()
    lines = ["| measure (ms) | n | p50 | p95 | max |", "|---|---|---|---|---|"]
    for name, values in (
        ("QP answers ready → request at pod", from_probe),
        ("pod turns ready → request at pod", from_ready),
    ):
        if values:
            lines.append(
                f"| {name} | {len(values)} | {statistics.median(values):.2f} | "
                f"{pct(values, 0.95):.2f} | {max(values):.2f} |"
            )
    verdict = "PASS" if from_probe and pct(from_probe, 0.95) < TARGET_COLD_P95_MS and not failures else "MISS"
    lines += [
        "",
        f"- cold path p95 (QP answers ready → forwarded) < {TARGET_COLD_P95_MS:g} ms: {verdict}; "
        f"failed trials: {failures}",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


# ---- memory under back-pressure ----------------------------------------------------------------


async def memory_part(args: argparse.Namespace, cluster: Cluster, act_port: int, act_pid: int) -> list[str]:
    qp = await FakeQP("127.0.3.1", delay=0.1).start()
    qp.ready = True
    await cluster.create_revision(revision(REV_BP, cc=2, timeout=10))
    await cluster.set_endpoints(private_endpoints(REV_BP, [("127.0.3.1", qp.port)]))
    await asyncio.sleep(1.0)
    statuses: dict[int, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            status = await raw_request(act_port, REV_BP, 30.0)
        except (OSError, TimeoutError, ValueError, IndexError):
            status = -1
        statuses[status] = statuses.get(status, 0) + 1

    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    interval = 1.0 / args.bp_rate
    sent = 0
    next_sample = start
    while time.monotonic() - start < args.bp_seconds:
        now = time.monotonic()
        due = int((now - start) / interval) + 1
        while sent < due:
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if now >= next_sample:
            samples.append((now - start, pb.rss_kb(act_pid)))
            next_sample += 5.0
        await asyncio.sleep(interval / 2)
    samples.append((time.monotonic() - start, pb.rss_kb(act_pid)))
    if tasks:
        await asyncio.wait(tasks, timeout=20)
    await qp.stop()
    quarter = next(kb for t, kb in samples if t >= args.bp_seconds / 4)
    last = samples[-1][1]
    verdict = "PASS" if last <= 1.2 * quarter else "MISS"
    lines = [
        f"- load: {sent} requests at {args.bp_rate:g} req/s for {args.bp_seconds:g} s into cc=2, one pod at 20 req/s, "
        f"revision timeout 10 s; answers: {dict(sorted(statuses.items()))}",
        "- activator RSS (MB) every 5 s: " + ", ".join(f"{kb / 1024:.1f}" for _, kb in samples),
        f"- RSS flat (last ≤ 1.2 × at 25 % of the run: {last / 1024:.1f} vs {quarter / 1024:.1f} MB): {verdict}",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


async def scale_part(args: argparse.Namespace, cluster: Cluster, act_pid: int) -> list[str]:
    n = args.scale_revisions
    rss_before = pb.rss_kb(act_pid)
    cpu_before = pb.cpu_ticks(act_pid)
    started = time.monotonic()
    batch = 50
    for first in range(0, n, batch):
        names = [f"scale-{i:05d}" for i in range(first, min(n, first + batch))]
        await asyncio.gather(*(cluster.create_revision(revision(name, cc=0)) for name in names))
        await asyncio.gather(*(cluster.set_endpoints(private_endpoints(name, [])) for name in names))
    created = time.monotonic() - started
    samples = [pb.rss_kb(act_pid)]
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        await asyncio.sleep(2.0)
        samples.append(pb.rss_kb(act_pid))
        if abs(samples[-1] - samples[-2]) <= 0.01 * samples[-2]:
            break
    cpu_s = (pb.cpu_ticks(act_pid) - cpu_before) / os.sysconf("SC_CLK_TCK")
    rss = samples[-1]
    verdict = "PASS" if rss <= 200 * 1024 else "MISS"
    per_rev = (rss - rss_before) / n
    lines = [
        f"- {n} revisions, each with private Endpoints at zero pods, created in {created:.1f} s",
        f"- activator RSS: {rss_before / 1024:.1f} MB before, {rss / 1024:.1f} MB after "
        f"(≈ {per_rev:.1f} kB per revision); samples every 2 s: " + ", ".join(f"{kb / 1024:.1f}" for kb in samples),
        f"- activator CPU over the creation and settling: {cpu_s:.2f} s",
        f"- ≤ 200 MB at {n} revisions: {verdict}",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


# ---- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    tools = pb.find_tools()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOAD_CPU})  # the API, StatServer and load generators stay off CPU 0
    load_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="activator-bench-"))
    procs = pb.Processes(workdir)
    cluster = Cluster(workdir)
    sections: list[str] = []
    code = 0
    try:
        await cluster.start()
        proc, act_port = start_activator(procs, tools, cluster, args.python)

        async def ready() -> bool:
            if proc.poll() is not None:
                raise pb.BenchError("activator exited:\n" + procs.log_tail("activator"))
            try:
                status, body = await asyncio.to_thread(pb.http_get, act_port, {"K-Network-Probe": "activator"}, 0.5)
            except OSError:
                return False
            return status == 200 and body == b"activator"

        await wait_until(ready, 20, "the activator to listen")
        rss_idle = pb.rss_kb(proc.pid)
        if "warm" in args.parts:
            print("## warm path", flush=True)
            sections += ["## Warm path", ""] + await warm_part(args, tools, procs, workdir, cluster, act_port, proc.pid)
        if "cold" in args.parts:
            print("## cold path", flush=True)
            sections += ["", f"## Cold path ({args.trials} trials)", ""] + await cold_part(args, cluster, act_port)
        if "memory" in args.parts:
            print("## memory under back-pressure", flush=True)
            sections += ["", "## Memory under back-pressure", ""] + await memory_part(args, cluster, act_port, proc.pid)
        if "scale" in args.parts:
            print("## revisions tracked", flush=True)
            sections += ["", "## Revisions tracked", ""] + await scale_part(args, cluster, proc.pid)
        sections += ["", f"- activator idle RSS: {rss_idle / 1024:.1f} MB"]
    except pb.BenchError as exc:
        print(f"activator_bench: {exc}", file=sys.stderr)
        code = 1
    finally:
        procs.stop_all()
        await cluster.stop()
    load_end = os.getloadavg()
    header = [
        f"# Activator benchmark — {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%SZ')}",
        "",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
        f"- load average at start / end: {load_start[0]:.2f} / {load_end[0]:.2f}; "
        f"activator on CPU {PROXY_CPU}, wrk + pod + API on CPU {LOAD_CPU}",
        f"- hot path: {pb.hot_path(args.python)}",
        "",
    ]
    report = "\n".join(header + sections) + "\n"
    print(report)
    args.report = report
    return code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (warm path)")
    p.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 50])
    p.add_argument("--trials", type=int, default=100, help="cold-path trials")
    p.add_argument("--bp-rate", type=float, default=200.0, help="back-pressure request rate (req/s)")
    p.add_argument("--bp-seconds", type=float, default=60.0)
    p.add_argument("--parts", type=lambda s: set(s.split(",")), default={"warm", "cold", "memory"})
    p.add_argument("--scale-revisions", type=int, default=5000, help="revisions for --parts scale")
    p.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    import uvloop

    with pb.terminate_on_signals():
        code = uvloop.run(run(args))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(args.report)
    return code


if __name__ == "__main__":
    sys.exit(main())
