"""Scraping queue-proxy stats over real sockets (CONTRACT.md §4.8).

Each fake pod is a small aiohttp server on its own loopback address (127.0.0.N, like `sluice
local`), all on one ephemeral port, serving real protobuf bytes from `encode_stat`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from autoscaler.dropped import DroppedPayloads
from autoscaler.scraper import (
    DirectScrapingNotAvailableError,
    HTTPScrapeClient,
    PodsExhaustedError,
    ScrapeError,
    ServiceScraper,
    StaticPods,
    population_mean_sample_size,
)
from sluice.http.simple import SimpleClient
from sluice.wire import Stat, encode_stat

NOW = 1_000_000.0

_next_host = itertools.count(2)


@dataclass
class FakePod:
    ip: str
    stat: Stat
    mode: str = "ok"  # ok | 500 | 503 | badtype | corrupt | oversized | hang
    hits: int = 0
    accepts: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.accepts.append(request.headers.get("Accept", ""))
        if self.mode == "500":
            return web.Response(status=500)
        if self.mode == "503":
            return web.Response(status=503)
        if self.mode == "hang":
            await asyncio.sleep(1)
        body = encode_stat(self.stat)
        ctype = "application/protobuf"
        if self.mode == "badtype":
            ctype = "text/plain"
        elif self.mode == "corrupt":
            body = b"\x0a\xff\xff"
        elif self.mode == "oversized":
            body = encode_stat(Stat(pod_name="p" * 400, average_concurrent_requests=1))
        return web.Response(body=body, headers={"Content-Type": ctype})


@dataclass
class Pods:
    port: int
    pods: list[FakePod]
    runners: list[web.AppRunner]

    def accessor(self, young: int = 0, window: float = 60.0) -> StaticPods:
        # The last `young` pods started less than a window ago.
        n = len(self.pods)
        return StaticPods([(p.ip, NOW - (1.0 if i >= n - young else window + 1)) for i, p in enumerate(self.pods)])


async def _start(pods: list[FakePod]) -> Pods:
    for _attempt in range(20):
        runners: list[web.AppRunner] = []
        port = 0
        try:
            for pod in pods:
                app = web.Application()
                app.router.add_get("/metrics", pod.handle)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
                await runner.setup()
                runners.append(runner)
                site = web.TCPSite(runner, pod.ip, port)
                await site.start()
                port = port or int(runner.addresses[0][1])
            return Pods(port, pods, runners)
        except OSError as exc:
            for r in runners:
                await r.cleanup()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free port")


def _pods(*modes: str, concurrency: float = 2.0) -> list[FakePod]:
    out = []
    for i, mode in enumerate(modes):
        ip = f"127.0.0.{next(_next_host) % 250 + 2}"
        stat = Stat(
            pod_name=f"pod-{i}",
            average_concurrent_requests=concurrency,
            average_proxied_concurrent_requests=0.5,
            request_count=10.0,
            proxied_request_count=1.0,
            process_uptime=100.0,
        )
        out.append(FakePod(ip, stat, mode))
    return out


@pytest.fixture
async def session() -> AsyncIterator[SimpleClient]:
    s = HTTPScrapeClient.create_session()
    yield s
    await s.close()


@pytest.fixture
async def cluster() -> AsyncIterator[list[Pods]]:
    started: list[Pods] = []
    yield started
    for p in started:
        for r in p.runners:
            await r.cleanup()


def _scraper(
    pods: Pods, session: SimpleClient, young: int = 0, **kw: object
) -> tuple[ServiceScraper, DroppedPayloads]:
    dropped = DroppedPayloads()
    client = HTTPScrapeClient(session, dropped)
    s = ServiceScraper(
        "ns",
        "rev-private",
        pods.accessor(young),
        client,
        clock=lambda: NOW,
        port=pods.port,
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )
    return s, dropped


@pytest.mark.parametrize(
    ("population", "sample"),
    [(0, 0), (1, 1), (3, 3), (4, 4), (5, 4), (10, 7), (20, 9), (50, 12), (100, 14), (1000, 16)],
)
def test_sample_size(population: int, sample: int) -> None:
    # n = ceil(N x 15.3664 / (N + 14.3664)); e.g. N = 10: 153.664 / 24.3664 = 6.31 -> 7
    assert population_mean_sample_size(population) == sample


async def test_all_pods_scraped_and_summed(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("ok", "ok", "ok"))
    cluster.append(pods)
    scraper, _ = _scraper(pods, session)
    stat = await scraper.scrape(60.0)
    # N = n = 3: sums 3 x 2 = 6 concurrency, 1.5 proxied, 30 rps, 3 proxied rps; x 3 / 3
    assert stat == Stat(
        pod_name="service-scraper",
        average_concurrent_requests=6.0,
        average_proxied_concurrent_requests=1.5,
        request_count=30.0,
        proxied_request_count=3.0,
    )
    assert [p.hits for p in pods.pods] == [1, 1, 1]
    assert all(a == ["application/protobuf"] for a in (p.accepts for p in pods.pods))


async def test_sample_extrapolated_to_population(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods(*["ok"] * 10))
    cluster.append(pods)
    scraper, _ = _scraper(pods, session)
    stat = await scraper.scrape(60.0)
    assert stat is not None
    # n = 7 of N = 10: 7 x 2 = 14 -> 14 / 7 x 10 = 20; rps 70 / 7 x 10 = 100
    assert stat.average_concurrent_requests == pytest.approx(20.0)
    assert stat.request_count == pytest.approx(100.0)
    assert sum(p.hits for p in pods.pods) == 7


async def test_old_pods_preferred_young_are_backups(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("ok", "ok", "ok", "ok", "ok"))
    cluster.append(pods)
    scraper, _ = _scraper(pods, session, young=1)  # 4 old + 1 young, n = 4
    await scraper.scrape(60.0)
    assert [p.hits for p in pods.pods] == [1, 1, 1, 1, 0]


async def test_failed_pod_replaced_by_next_candidate(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("ok", "500", "ok", "ok", "ok"))
    cluster.append(pods)
    scraper, _ = _scraper(pods, session)
    stat = await scraper.scrape(60.0)
    assert stat is not None
    # 4 successes of N = 5: 8 / 4 x 5 = 10
    assert stat.average_concurrent_requests == pytest.approx(10.0)
    assert sum(p.hits for p in pods.pods) == 5


async def test_pods_exhausted(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("ok", "ok", "ok", "500"))  # N = n = 4, no spare candidate
    cluster.append(pods)
    scraper, _ = _scraper(pods, session)
    with pytest.raises(PodsExhaustedError):
        await scraper.scrape(60.0)


async def test_bad_payloads_fail_and_are_counted(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("corrupt", "oversized", "badtype"))
    cluster.append(pods)
    scraper, dropped = _scraper(pods, session)
    with pytest.raises(PodsExhaustedError):  # non-mesh failures only: no fallback
        await scraper.scrape(60.0)
    assert dropped.counts == {"corrupt": 1, "oversized": 1}
    assert scraper.pods_addressable


async def test_no_pods_no_stat(session: SimpleClient) -> None:
    client = HTTPScrapeClient(session)
    scraper = ServiceScraper("ns", "rev-private", StaticPods([]), client, clock=lambda: NOW)
    assert await scraper.scrape(60.0) is None


async def test_stopped_pod_and_timeout(cluster: list[Pods]) -> None:
    pods = await _start(_pods("ok", "hang"))
    cluster.append(pods)
    # A pod that stopped answering: connection refused on its address.
    await pods.runners[0].cleanup()
    short = HTTPScrapeClient.create_session(timeout=0.3)
    try:
        client = HTTPScrapeClient(short)
        with pytest.raises(ScrapeError):
            await client.scrape(f"http://{pods.pods[0].ip}:{pods.port}/metrics")
        with pytest.raises(ScrapeError):
            await client.scrape(f"http://{pods.pods[1].ip}:{pods.port}/metrics")
    finally:
        await short.close()


async def test_all_503_falls_back_to_service_scraping(session: SimpleClient, cluster: list[Pods]) -> None:
    pods = await _start(_pods("503", "503", "503"))
    service = await _start(_pods("ok"))
    cluster += [pods, service]
    # The "private service" answers for a different pod each time (round robin behind it).
    names = itertools.cycle(["a", "b", "c"])
    svc_pod = service.pods[0]
    original = svc_pod.handle

    async def round_robin(request: web.Request) -> web.StreamResponse:
        svc_pod.stat = Stat(pod_name=next(names), average_concurrent_requests=3, process_uptime=100.0)
        return await original(request)

    svc_pod.handle = round_robin  # type: ignore[method-assign]
    app = web.Application()
    app.router.add_get("/metrics", round_robin)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.runners.append(runner)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    scraper, _ = _scraper(pods, session, service_url=url)
    stat = await scraper.scrape(60.0)
    # ready = 3 -> n = 3 distinct pods a, b, c: 9 / 3 x 3 = 9
    assert stat is not None and stat.average_concurrent_requests == pytest.approx(9.0)
    assert not scraper.pods_addressable  # switched permanently
    before = sum(p.hits for p in pods.pods)
    await scraper.scrape(60.0)
    assert sum(p.hits for p in pods.pods) == before

    disabled, _ = _scraper(pods, session, service_url=url, mesh_mode="disabled")
    with pytest.raises(DirectScrapingNotAvailableError):
        await disabled.scrape(60.0)
