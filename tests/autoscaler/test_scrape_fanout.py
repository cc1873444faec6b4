"""The callback-driven scrape fan-out (CONTRACT.md §4.8) and the GETs under it
(`sluice.http.simple`): deadlines, refused and hanging pods, rounds that partly fail,
cancellation, and connection reuse, over real sockets on 127.0.0.N.

Each fake pod is a raw asyncio server that counts its connections and requests, so the
tests can see which connections were reused and which were closed.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import itertools
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.dropped import DroppedPayloads
from autoscaler.podaccessor import PodIndex
from autoscaler.scraper import HTTPScrapeClient, PodsExhaustedError, ServiceScraper, StaticPods
from sluice.http import simple
from sluice.http.client import DialError
from sluice.http.simple import SimpleClient
from sluice.wire import DecodeError, Stat, decode_stat, encode_stat
from sluice.wire import _fields as wire_fields

NOW = 1_000_000.0
TIMEOUT = 0.3  # per GET; the deadline scan is late by at most 50 ms

_hosts = itertools.count(2)


def _next_ip() -> str:
    # Away from test_scraper.py's addresses, in case both run in one process.
    return f"127.0.{next(_hosts) % 250 + 2}.{next(_hosts) % 250 + 2}"


@dataclass
class RawPod:
    ip: str
    mode: str = "ok"  # ok | hang | 503
    concurrency: float = 2.0
    connections: int = 0  # accepted
    closed: int = 0  # closed by the client (EOF seen)
    requests: list[bytes] = field(default_factory=list)

    def response(self) -> bytes:
        if self.mode == "503":
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        body = encode_stat(
            Stat(
                pod_name=self.ip, average_concurrent_requests=self.concurrency, request_count=10.0, process_uptime=99.0
            )
        )
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: %d\r\n\r\n" % len(body)
        return head + body


class _PodProtocol(asyncio.Protocol):
    def __init__(self, pod: RawPod) -> None:
        self.pod = pod
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pod.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.pod.requests.append(head)
            if self.pod.mode != "hang" and self.transport is not None:
                self.transport.write(self.pod.response())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pod.closed += 1


@dataclass
class Cluster:
    port: int
    pods: list[RawPod]
    servers: list[asyncio.AbstractServer]

    def static(self, extra: Sequence[str] = ()) -> StaticPods:
        # Every pod old enough: the candidate order is a shuffle of them all.
        return StaticPods([(ip, NOW - 3600) for ip in [*(p.ip for p in self.pods), *extra]])


async def _serve(modes: list[str]) -> Cluster:
    loop = asyncio.get_running_loop()
    for _attempt in range(20):
        pods = [RawPod(_next_ip(), mode) for mode in modes]
        servers: list[asyncio.AbstractServer] = []
        port = 0
        try:
            for pod in pods:
                server = await loop.create_server(functools.partial(_PodProtocol, pod), pod.ip, port)
                servers.append(server)
                port = port or server.sockets[0].getsockname()[1]
            return Cluster(port, pods, servers)
        except OSError as exc:
            for s in servers:
                s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free port")


@pytest.fixture
async def clusters() -> AsyncIterator[list[Cluster]]:
    started: list[Cluster] = []
    yield started
    for c in started:
        for s in c.servers:
            s.close()


@pytest.fixture
async def session() -> AsyncIterator[SimpleClient]:
    s = HTTPScrapeClient.create_session(timeout=TIMEOUT)
    yield s
    await s.close()


async def _cluster(clusters: list[Cluster], *modes: str) -> Cluster:
    c = await _serve(list(modes))
    clusters.append(c)
    return c


def _scraper(c: Cluster, session: SimpleClient, pods: StaticPods | None = None, **kw: object) -> ServiceScraper:
    return ServiceScraper(
        "ns",
        "rev-private",
        pods if pods is not None else c.static(),
        HTTPScrapeClient(session, DroppedPayloads()),
        clock=lambda: NOW,
        port=c.port,
        rng=random.Random(3),
        **kw,  # type: ignore[arg-type]
    )


async def _settle(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# ---- the GETs (sluice.http.simple) ---------------------------------------------------


async def test_keep_alive_reuses_one_connection(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "ok")
    pod = c.pods[0]
    for _ in range(3):
        resp = await session.get(pod.ip, c.port, "/metrics", [("Accept", "application/protobuf")])
        assert resp.status == 200 and decode_stat(resp.body).pod_name == pod.ip
    assert pod.connections == 1 and len(pod.requests) == 3
    assert pod.requests[0].startswith(b"GET /metrics HTTP/1.1\r\nHost: %s:%d\r\n" % (pod.ip.encode(), c.port))


async def test_without_keep_alive_every_get_dials_and_says_close(clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "ok")
    pod = c.pods[0]
    client = HTTPScrapeClient.create_session(keep_alive=False, timeout=TIMEOUT)
    try:
        for _ in range(2):
            assert (await client.get(pod.ip, c.port, "/metrics")).status == 200
    finally:
        await client.close()
    assert pod.connections == 2
    assert all(b"\r\nConnection: close" in r for r in pod.requests)


async def test_deadline_fails_a_hanging_get_and_drops_its_connection(
    session: SimpleClient, clusters: list[Cluster]
) -> None:
    c = await _cluster(clusters, "hang")
    pod = c.pods[0]
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await session.get(pod.ip, c.port, "/metrics")
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + 0.5
    await _settle(lambda: pod.closed == 1)  # mid-response: not reusable
    assert not session.pool(pod.ip, c.port).idle
    assert not session.deadlines.active


async def test_refused_connection_fails_at_once(session: SimpleClient) -> None:
    start = time.monotonic()
    with pytest.raises(DialError, match="connection refused"):
        await session.get(_next_ip(), 9, "/metrics")
    assert time.monotonic() - start < TIMEOUT


async def test_pools_of_pods_that_went_away_are_forgotten(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "ok")
    live = c.pods[0]
    await session.get(live.ip, c.port, "/metrics")
    for i in range(600):  # pods that came and went: one refused address each
        with pytest.raises(DialError):
            await session.get(f"127.1.{i // 250}.{i % 250 + 1}", 9, "/metrics")
    assert len(session.pools) < 512
    assert (live.ip, c.port) in session.pools  # kept: it holds an idle connection
    await session.get(live.ip, c.port, "/metrics")
    assert live.connections == 1


async def test_pools_dialling_when_swept_keep_their_connections(clusters: list[Cluster]) -> None:
    # More pods than the sweep threshold, all dialled at once: the sweep runs while dials
    # are in flight, and must not orphan them (each later GET would dial again).
    c = await _cluster(clusters, *["ok"] * 40)
    session = HTTPScrapeClient.create_session(timeout=5.0)
    session._sweep_at = 8  # the threshold is 256 pools; 40 pods cross a lowered one twice
    try:
        for _ in range(3):
            await asyncio.gather(*(session.get(p.ip, c.port, "/metrics") for p in c.pods))
    finally:
        await session.close()
    assert [p.connections for p in c.pods] == [1] * len(c.pods)


async def test_sweeps_within_one_burst_keep_pools_whose_dial_has_not_started(
    clusters: list[Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    # At 10,000 pods the first round creates thousands of pools in one loop iteration, so
    # several sweeps run before any dial task starts (issue 19). The threshold is lowered so
    # that 40 pods cross it three times (8, 16, 32): a pool marked empty by one sweep and
    # dropped by the next would orphan its connection, and its pod would be dialled again.
    monkeypatch.setattr(simple, "_MIN_SWEEP", 8)
    c = await _cluster(clusters, *["ok"] * 40)
    session = HTTPScrapeClient.create_session(timeout=5.0)
    try:
        for _ in range(3):
            await asyncio.gather(*(session.get(p.ip, c.port, "/metrics") for p in c.pods))
        assert len(session.pools) == len(c.pods)
    finally:
        await session.close()
    assert [p.connections for p in c.pods] == [1] * len(c.pods)
    await _settle(lambda: all(p.closed == 1 for p in c.pods))  # none left open by close()


async def test_cancelled_get_closes_its_connection(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "hang")
    pod = c.pods[0]
    task = asyncio.ensure_future(session.get(pod.ip, c.port, "/metrics", timeout=30))
    await _settle(lambda: len(pod.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle(lambda: pod.closed == 1)
    assert not session.deadlines.active


async def test_close_fails_gets_in_flight(clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "hang")
    client = SimpleClient(timeout=30)
    task = asyncio.ensure_future(client.get(c.pods[0].ip, c.port, "/metrics"))
    await _settle(lambda: len(c.pods[0].requests) == 1)
    await client.close()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 1)


# ---- one revision's round ---------------------------------------------------------------


async def test_warm_round_runs_without_a_task_per_pod(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, *["ok"] * 4)  # N = n = 4: every round asks every pod
    scraper = _scraper(c, session)
    await scraper.scrape(60.0)  # dials: one task per new connection
    before = len(asyncio.all_tasks())
    round_task = asyncio.ensure_future(scraper.scrape(60.0))
    await asyncio.sleep(0)  # the round has issued its 4 GETs
    assert len(asyncio.all_tasks()) == before + 1  # the round's caller only
    stat = await round_task
    assert stat is not None and stat.average_concurrent_requests == pytest.approx(8.0)  # 4 x 2 / 4 x 4
    assert [p.connections for p in c.pods] == [1, 1, 1, 1]  # kept alive
    assert [len(p.requests) for p in c.pods] == [2, 2, 2, 2]


async def test_finished_rounds_leave_no_garbage_cycles(session: SimpleClient, clusters: list[Cluster]) -> None:
    # 1,000 rounds a second: whatever a round leaves in reference cycles waits for (and
    # drives) the garbage collector, whose full passes over the informer's pods cost more
    # than the scraping did (bench/RESULTS.md).
    c = await _cluster(clusters, *["ok"] * 4)
    scraper = _scraper(c, session)
    await scraper.scrape(60.0)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            await scraper.scrape(60.0)
        gc.collect()
        loop = asyncio.get_running_loop()
        # Earlier tests' closed selector transports (asyncio's own self-cycles, other loops)
        # may be released at any time; only what this loop's rounds made counts.
        ours = [
            o
            for o in gc.garbage
            if type(o).__module__.split(".")[0] in ("sluice", "autoscaler")
            or (isinstance(o, asyncio.BaseTransport) and getattr(o, "_loop", loop) is loop)
        ]
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_refused_and_hanging_pods_are_replaced_by_the_next_candidates(
    session: SimpleClient, clusters: list[Cluster]
) -> None:
    c = await _cluster(clusters, "hang", *["ok"] * 8)
    gone = _next_ip()  # a pod that stopped listening: connection refused
    scraper = _scraper(c, session, pods=c.static(extra=[gone]))
    start = time.monotonic()
    stat = await scraper.scrape(60.0)
    elapsed = time.monotonic() - start
    # N = 10, n = 7: the refused pod and (if sampled) the hanging one are replaced, so 7
    # healthy pods answer: 7 x 2 / 7 x 10 = 20.
    assert stat is not None and stat.average_concurrent_requests == pytest.approx(20.0)
    assert sum(len(p.requests) for p in c.pods if p.mode == "ok") == 7
    if c.pods[0].requests:  # the hanging pod was sampled: the round waited for its deadline
        assert TIMEOUT <= elapsed < TIMEOUT + 1.0
        await _settle(lambda: c.pods[0].closed == 1)


async def test_round_of_hanging_pods_fails_after_one_deadline(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "hang", "hang", "hang", "hang")  # N = n = 4: no spare
    scraper = _scraper(c, session)
    start = time.monotonic()
    with pytest.raises(PodsExhaustedError):
        await scraper.scrape(60.0)
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + 1.0
    await _settle(lambda: all(p.closed == 1 for p in c.pods))
    assert not session.deadlines.active
    assert scraper.pods_addressable  # timeouts are not mesh errors: no fallback


async def test_one_exhausted_worker_ends_the_round_and_its_other_gets(
    session: SimpleClient, clusters: list[Cluster]
) -> None:
    c = await _cluster(clusters, "hang", "hang", "hang")
    gone = _next_ip()
    # N = n = 4: the refused pod's worker runs out of candidates at once; Go's errgroup then
    # cancels the others, so the round fails long before their deadline.
    scraper = _scraper(c, session, pods=c.static(extra=[gone]))
    start = time.monotonic()
    with pytest.raises(PodsExhaustedError):
        await scraper.scrape(60.0)
    assert time.monotonic() - start < TIMEOUT
    # A GET already sent leaves its connection mid-response: closed. One still dialling
    # when the round ended keeps its new connection for the next round.
    await _settle(lambda: all(p.closed == 1 for p in c.pods if p.requests))
    assert not session.deadlines.active


async def test_mesh_and_other_failures_mixed_do_not_fall_back(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "503", "503")
    scraper = _scraper(c, session, pods=c.static(extra=[_next_ip()]))
    with pytest.raises(PodsExhaustedError):
        await scraper.scrape(60.0)
    assert scraper.pods_addressable


async def test_cancelled_round_closes_its_connections(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "hang", "hang")
    task = asyncio.ensure_future(_scraper(c, session).scrape(60.0))
    await _settle(lambda: all(p.requests for p in c.pods))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle(lambda: all(p.closed == 1 for p in c.pods))
    assert not session.deadlines.active


async def test_passthrough_lb_sends_host_and_direct_lb(session: SimpleClient, clusters: list[Cluster]) -> None:
    c = await _cluster(clusters, "ok")
    await _scraper(c, session, use_passthrough_lb=True).scrape(60.0)
    head = c.pods[0].requests[0].decode().lower()
    assert "\r\nhost: rev-private.ns\r\n" in head + "\r\n"
    assert "\r\nknative-direct-lb: true" in head and "\r\naccept: application/protobuf" in head
    assert head.count("\r\nhost:") == 1


# ---- what the round reads: pods from the informer, the Stat payload ---------------------


def _pod(name: str, ip: str, ready: bool = True, deleting: bool = False, started: str = "2020-01-01T00:00:00Z") -> Any:
    meta: dict[str, object] = {"name": name, "namespace": "ns", "labels": {"serving.knative.dev/revision": "rev"}}
    if deleting:
        meta["deletionTimestamp"] = "2020-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pod_index_candidates_follow_pod_events() -> None:
    index = PodIndex()
    acc = index.accessor("ns", "rev")
    a, b = _pod("a", "10.0.0.1"), _pod("b", "10.0.0.2", started="2099-01-01T00:00:00Z")
    index.on_event("ADDED", None, a)
    index.on_event("ADDED", None, b)
    assert acc.pod_ips_split_by_age(60.0, NOW + 2e9) == (["10.0.0.1"], ["10.0.0.2"])
    not_ready = _pod("a", "10.0.0.1", ready=False)
    index.on_event("MODIFIED", a, not_ready)
    assert acc.pod_ips_split_by_age(60.0, NOW + 2e9) == ([], ["10.0.0.2"])
    index.on_event("MODIFIED", not_ready, a)
    terminating = _pod("b", "10.0.0.2", deleting=True)
    index.on_event("MODIFIED", b, terminating)
    assert acc.pod_ips_split_by_age(60.0, NOW + 2e9) == (["10.0.0.1"], [])
    index.on_event("DELETED", terminating, None)
    index.on_event("DELETED", a, None)
    assert acc.pod_ips_split_by_age(60.0, NOW) == ([], []) and acc.ready_count() == 0


def _generic_decode(buf: bytes) -> Stat:
    """decode_stat as it was before its fast paths: every field through the generic reader."""
    stat = Stat()
    names = {2: "average_concurrent_requests", 3: "average_proxied_concurrent_requests", 4: "request_count"}
    names |= {5: "proxied_request_count", 6: "process_uptime"}
    for number, wtype, value in wire_fields(buf):
        if number == 1:
            if not isinstance(value, bytes):
                raise DecodeError("pod_name")
            try:
                stat.pod_name = value.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError("utf-8") from exc
        elif number in names:
            if wtype != 1 or not isinstance(value, bytes):
                raise DecodeError("double")
            setattr(stat, names[number], struct.unpack("<d", value)[0])
        elif number == 7:
            if wtype != 0 or not isinstance(value, int):
                raise DecodeError("varint")
            stat.timestamp = value - (1 << 64) if value >= 1 << 63 else value
    return stat


@given(
    st.binary(max_size=64) | st.builds(lambda s, tail: encode_stat(s) + tail, st.builds(Stat), st.binary(max_size=12))
)
def test_fast_stat_decode_agrees_with_the_generic_reader(payload: bytes) -> None:
    try:
        expected: Stat | None = _generic_decode(payload)
    except DecodeError:
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            decode_stat(payload)
    else:
        got = decode_stat(payload)
        # NaN payloads compare unequal to themselves: compare the bytes they encode to.
        assert encode_stat(got) == encode_stat(expected)
