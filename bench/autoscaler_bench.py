"""Autoscaler tick cost: CPU per decision tick and memory as revisions and pods grow (issue 4).

Two measurements, both as CPU seconds per wall second of simulated operation:

  decide  pure: every second, record one scraped stat and one activator stat per revision into the
          collector, then evaluate every decider (twice as often as Knative's 2 s tick). Fake clock,
          no I/O; decisions are the same code the table tests check.
  scrape  real sockets: every revision's pods (1..10 each) are fake stat endpoints served by a
          separate process on 127.0.x.y:<port>; the collector scrapes each revision every second
          (sample-size formula, extrapolation) and the deciders tick. The scrapers read their pods
          from the autoscaler's informer index (PodIndex fed with pod objects, as in the app;
          `--static-pods` for a fixed list, as the rows before issue 4's fan-out were measured).
          Only this process's CPU is counted (the fake endpoints run in the child, whose CPU is
          printed as `pods_cpu` to show how busy the machine was); `rounds_per_s` is the
          revision scrapes that produced a stat, per second.

Usage:
  python bench/autoscaler_bench.py decide --revisions 10 100 1000 --pods 10
  python bench/autoscaler_bench.py scrape --revisions 10 100 1000 --pods 10 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import cpu_ticks  # a sibling script, not a package

from autoscaler.collector import MetricCollector
from autoscaler.podaccessor import REVISION_LABEL, PodIndex
from autoscaler.resources import DeciderSpec, MetricSpec
from autoscaler.scaling import MultiScaler
from autoscaler.scraper import HTTPScrapeClient, PodAccessor, ServiceScraper, StaticPods
from sluice import aio
from sluice.wire import Stat

SPEC = DeciderSpec(
    max_scale_up_rate=1000.0,
    max_scale_down_rate=2.0,
    scaling_metric="concurrency",
    target_value=70.0,
    total_value=100.0,
    target_burst_capacity=211.0,
    activator_capacity=100.0,
    panic_threshold=2.0,
    stable_window=60.0,
    scale_down_delay=0.0,
    initial_scale=1,
    activation_scale=0,
    reachable=True,
)
METRIC = MetricSpec(stable_window=60.0, panic_window=6.0, scrape_target="private")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bench_decide(revisions: int, pods: int, seconds: int) -> dict[str, float]:
    clock = Clock(1_700_000_000.0)
    collector = MetricCollector(clock)
    multi = MultiScaler(collector, lambda ns, name: pods, clock, tick_interval=1.0)
    tracemalloc.start()
    keys = []
    for i in range(revisions):
        name = f"rev-{i}"
        collector.create_or_update("bench", name, METRIC)
        multi.create("bench", name, SPEC)
        keys.append(f"bench/{name}")
    scraped = Stat(pod_name="service-scraper", average_concurrent_requests=pods * 50.0, request_count=pods * 80.0)
    activator = Stat(pod_name="activator", average_concurrent_requests=3.0, request_count=4.0)
    # Warm up a full stable window so averages run over full rings.
    for _ in range(60):
        clock.now += 1.0
        for key in keys:
            collector.record(key, clock.now, scraped)
    # The state's peak (setup and a full window of data), then stop tracing: tracemalloc hooks
    # every allocation and made the timed ticks ~8x slower (0.124 vs 0.016 core at 1,000 × 10,
    # issue 19); the CPU figures before issue 19 in RESULTS.md include that overhead.
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    start = time.process_time()
    for _ in range(seconds):
        clock.now += 1.0
        for key in keys:
            collector.record(key, clock.now, scraped)
            activator.timestamp = 0
            collector.record_wire_stat(key, activator)
        multi.tick_due(clock.now)
    cpu = time.process_time() - start
    desired = {multi.get("bench", f"rev-{i}").status.desired_scale for i in range(revisions)}  # type: ignore[union-attr]
    # Expected per revision: stable = pods x 50 + 3 -> ceil((50 p + 3) / 70)
    return {"cpu_per_second": cpu / seconds, "peak_mib": peak / 2**20, "desired": float(min(desired))}


FAKE_SERVER = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[2])
from sluice.wire import Stat, encode_stat
body = encode_stat(Stat(pod_name="p", average_concurrent_requests=50.0, request_count=80.0, process_uptime=999.0))
resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, data):
        self.t.write(resp * data.count(b"\r\n\r\n"))
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "0.0.0.0", int(sys.argv[1]), backlog=4096)
    print("ready", flush=True)
    await asyncio.sleep(10**9)
from sluice import aio
aio.run(main())
"""


def _pod_ip(n: int) -> str:
    return f"127.0.{n // 250 + 1}.{n % 250 + 2}"


def _pod_object(revision: str, name: str, ip: str) -> dict[str, Any]:
    """A Running, Ready pod as the informer delivers it (the fields the autoscaler reads)."""
    conditions = [{"type": t, "status": "True"} for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return {
        "metadata": {"name": name, "namespace": "bench", "labels": {REVISION_LABEL: revision}},
        "status": {"phase": "Running", "podIP": ip, "startTime": "2020-01-01T00:00:00Z", "conditions": conditions},
    }


class CountingScraper(ServiceScraper):
    rounds = 0  # scrapes that produced a stat, all revisions

    async def scrape(self, window: float) -> Stat | None:
        stat = await super().scrape(window)
        if stat is not None:
            CountingScraper.rounds += 1
        return stat


def _cpu_seconds(pid: int) -> float:
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def bench_scrape(revisions: int, pods: int, seconds: int, port: int, static_pods: bool) -> dict[str, float]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(port), root], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        return aio.run(_bench_scrape(revisions, pods, seconds, port, static_pods, child.pid))
    finally:
        child.kill()
        child.wait()


async def _bench_scrape(
    revisions: int, pods: int, seconds: int, port: int, static_pods: bool, child: int
) -> dict[str, float]:
    session = HTTPScrapeClient.create_session()
    client = HTTPScrapeClient(session)
    index = PodIndex()
    pod_lists: dict[str, list[tuple[str, float]]] = {}
    n = 0
    for i in range(revisions):
        pod_lists[f"bench/rev-{i}"] = [(_pod_ip(n + j), 0.0) for j in range(pods)]
        for j in range(pods):
            index.on_event("ADDED", None, _pod_object(f"rev-{i}", f"rev-{i}-pod-{j}", _pod_ip(n + j)))
        n += pods

    def factory(key: str, spec: MetricSpec) -> ServiceScraper:
        accessor: PodAccessor = StaticPods(pod_lists[key]) if static_pods else index.accessor(*key.split("/", 1))
        return CountingScraper("bench", spec.scrape_target, accessor, client, clock=time.time, port=port)

    collector = MetricCollector(time.time, scraper_factory=factory)
    multi = MultiScaler(collector, lambda ns, name: pods, time.time)
    for i in range(revisions):
        collector.create_or_update("bench", f"rev-{i}", METRIC)
        multi.create("bench", f"rev-{i}", SPEC)
    ticker = asyncio.ensure_future(multi.run(0.1))
    await asyncio.sleep(3.0)  # connections established, loops in phase
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    rounds0, child0 = CountingScraper.rounds, _cpu_seconds(child)
    await asyncio.sleep(seconds)
    usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall0
    rounds, child_cpu = CountingScraper.rounds - rounds0, _cpu_seconds(child) - child0
    ticker.cancel()
    errors = sum(1 for i in range(revisions) if collector.collection(f"bench/rev-{i}").last_error)  # type: ignore[union-attr,misc]
    desired = {multi.get("bench", f"rev-{i}").status.desired_scale for i in range(revisions)}  # type: ignore[union-attr]
    await collector.close()
    await session.close()
    user, system = usage.ru_utime - usage0.ru_utime, usage.ru_stime - usage0.ru_stime
    return {
        "cpu_per_second": (user + system) / wall,
        "user": user / wall,
        "sys": system / wall,
        "rounds_per_s": rounds / wall,
        "pods_cpu": child_cpu / wall,
        "rss_mib": usage.ru_maxrss / 1024,
        "errors": float(errors),
        "desired": float(min(desired)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["decide", "scrape"])
    ap.add_argument("--revisions", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--port", type=int, default=19090 + os.getpid() % 1000)
    ap.add_argument("--static-pods", action="store_true", help="scrape a fixed pod list, not the informer index")
    args = ap.parse_args()
    for r in args.revisions:
        if args.mode == "decide":
            res = bench_decide(r, args.pods, args.seconds)
        else:
            res = bench_scrape(r, args.pods, args.seconds, args.port, args.static_pods)
        print(
            f"{args.mode} revisions={r:5d} pods/rev={args.pods:2d} " + " ".join(f"{k}={v:.4g}" for k, v in res.items())
        )


if __name__ == "__main__":
    main()
