"""Probes (§1.3, §2.5), the breaker (§2.7), timeouts (§2.8), stats (§2.9) and
websocket tunnelling (§2.6) through a real queue-proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sluice.wire import decode_stat
from tests.proxy.conftest import MakeQP
from tests.support import RawConnection, free_port, get, http_request, raw_upstream, read_request_head

KUBELET = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}


class SlowApp:
    """An upstream whose requests block until released, to hold breaker slots."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.concurrent = 0
        self.max_concurrent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.started += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if request.path == "/slow":
                await self.release.wait()
            elif request.path == "/sleep":
                await asyncio.sleep(float(request.query["s"]))
            elif request.path == "/ws":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for msg in ws:
                    await ws.send_str("echo:" + msg.data)
                return ws
            return web.Response(text="done")
        finally:
            self.concurrent -= 1


@pytest.fixture
async def slow_app() -> AsyncIterator[tuple[SlowApp, int]]:
    app_state = SlowApp()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", app_state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    yield app_state, port
    app_state.release.set()
    await runner.cleanup()


# ---- probes ---------------------------------------------------------------------


async def test_kubelet_probe_answers_queue(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port, SERVING_READINESS_PROBE=f'{{"tcpSocket":{{"port":{port},"host":"127.0.0.1"}}}}')
    resp = await http_request(qp.port, get("/any/path", KUBELET))
    assert (resp.status, resp.body) == (200, b"queue")
    for ua in ("Knative-Activator-Probe", "Knative-Autoscaling-Probe/1"):
        resp = await http_request(qp.port, get("/", {"User-Agent": ua, "K-Network-Probe": "queue"}))
        assert (resp.status, resp.body) == (200, b"queue")


async def test_health_check_with_other_probe_values_is_400(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port)
    # The KPA's activator probe landing on a QP must see 400, not "activator" (§1.3).
    resp = await http_request(
        qp.port, get("//healthz", {"User-Agent": "Knative-Autoscaling-Probe", "K-Network-Probe": "activator"})
    )
    assert (resp.status, resp.body) == (400, b"unexpected probe header value: activator\n")
    resp = await http_request(qp.port, get("/", {"User-Agent": "kube-probe/1.30"}))
    assert (resp.status, resp.body) == (400, b"unexpected probe header value: \n")


async def test_not_ready_user_container_gives_503_empty(make_qp: MakeQP) -> None:
    dead = free_port()
    qp = await make_qp(
        dead,
        SERVING_READINESS_PROBE=f'{{"tcpSocket":{{"port":{dead},"host":"127.0.0.1"}},"periodSeconds":1,"timeoutSeconds":1}}',
    )
    resp = await http_request(qp.port, get("/", KUBELET))
    assert (resp.status, resp.body) == (503, b"")


async def test_network_probe(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port)
    resp = await http_request(qp.port, get("/", {"K-Network-Probe": "probe", "K-Network-Hash": "abc123"}))
    assert (resp.status, resp.body, resp.header("K-Network-Hash")) == (200, b"", "abc123")
    resp = await http_request(qp.port, get("/", {"K-Network-Probe": "probe"}))
    assert resp.status == 400
    assert resp.body == b'a probe request must contain a non-empty "K-Network-Hash" header\n'


async def test_probes_fail_while_draining_but_requests_are_served(
    make_qp: MakeQP, slow_app: tuple[SlowApp, int]
) -> None:
    _app, port = slow_app
    qp = await make_qp(port, SLUICE_DRAIN_QUIET_PERIOD="5")
    drain = asyncio.create_task(http_request(qp.admin_port, get("/wait-for-drain"), timeout=20))
    await asyncio.sleep(0.1)
    resp = await http_request(qp.port, get("/", KUBELET))
    assert (resp.status, resp.body) == (503, b"shutting down\n")
    resp = await http_request(qp.port, get("/", {"K-Network-Probe": "probe", "K-Network-Hash": "x"}))
    assert resp.status == 503
    resp = await http_request(qp.port, get("/hello"))
    assert (resp.status, resp.body) == (200, b"done")
    # No SIGTERM followed within 1 s: the drain resets and the preStop call returns.
    done = await asyncio.wait_for(drain, 5)
    assert done.status == 200
    resp = await http_request(qp.port, get("/", KUBELET))
    assert resp.status == 200


async def test_admin_and_stats_ports_serve_only_their_paths(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port)
    assert (await http_request(qp.admin_port, get("/other"))).status == 404
    assert (await http_request(qp.metrics_port, get("/other"))).status == 404


# ---- breaker --------------------------------------------------------------------


async def test_breaker_queue_and_overflow(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    app, port = slow_app
    qp = await make_qp(port, CONTAINER_CONCURRENCY="1")
    holders = [asyncio.create_task(http_request(qp.port, get("/slow"), timeout=20)) for _ in range(11)]
    for _ in range(100):
        if qp.handler.breaker is not None and qp.handler.breaker.admitted == 11:
            break
        await asyncio.sleep(0.02)
    assert app.started == 1  # one executing, ten queued
    resp = await http_request(qp.port, get("/slow"))
    assert (resp.status, resp.body) == (503, b"pending request queue full\n")
    app.release.set()
    results = await asyncio.gather(*holders)
    assert [r.status for r in results] == [200] * 11
    assert app.max_concurrent == 1
    assert qp.handler.in_flight == 0


async def test_cc_zero_is_unlimited(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    app, port = slow_app
    qp = await make_qp(port, CONTAINER_CONCURRENCY="0")
    holders = [asyncio.create_task(http_request(qp.port, get("/slow"), timeout=20)) for _ in range(30)]
    for _ in range(200):
        if app.started == 30:
            break
        await asyncio.sleep(0.02)
    assert app.started == 30
    app.release.set()
    assert all(r.status == 200 for r in await asyncio.gather(*holders))


async def test_client_gone_while_queued_frees_its_slot(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    app, port = slow_app
    qp = await make_qp(port, CONTAINER_CONCURRENCY="1")
    running = asyncio.create_task(http_request(qp.port, get("/slow"), timeout=20))
    queued = await RawConnection.open(qp.port)
    await queued.send(get("/slow"))
    breaker = qp.handler.breaker
    assert breaker is not None
    for _ in range(100):
        if breaker.admitted == 2:
            break
        await asyncio.sleep(0.02)
    await queued.close()
    for _ in range(100):
        if breaker.admitted == 1:
            break
        await asyncio.sleep(0.02)
    assert breaker.admitted == 1 and qp.handler.in_flight == 1
    app.release.set()
    assert (await running).status == 200
    assert qp.handler.in_flight == 0 and breaker.admitted == 0


async def test_client_gone_while_executing_frees_slot_and_cancels_upstream(make_qp: MakeQP) -> None:
    upstream_saw_eof = asyncio.Event()
    got_request = asyncio.Event()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _h, _ = await read_request_head(reader)
        if "/fast" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return
        got_request.set()
        if await reader.read(1) == b"":
            upstream_saw_eof.set()

    async with raw_upstream(app) as port:
        qp = await make_qp(port, CONTAINER_CONCURRENCY="1")
        conn = await RawConnection.open(qp.port)
        await conn.send(get("/slow"))
        await asyncio.wait_for(got_request.wait(), 5)
        await conn.close()
        # The upstream request is cancelled (its connection closed), the slot freed.
        await asyncio.wait_for(upstream_saw_eof.wait(), 5)
        for _ in range(100):
            if qp.handler.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert qp.handler.in_flight == 0
        assert qp.handler.breaker is not None and qp.handler.breaker.admitted == 0
        resp = await http_request(qp.port, get("/fast"))
        assert resp.status == 200


# ---- timeouts -------------------------------------------------------------------


async def test_revision_timeout_before_response(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port, REVISION_TIMEOUT_SECONDS="1")
    resp = await http_request(qp.port, get("/slow"))
    assert (resp.status, resp.body) == (504, b"request timeout")
    assert resp.header("Content-Type") == "text/plain; charset=utf-8"
    assert qp.handler.in_flight == 0


async def test_timeout_while_queued_in_breaker(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port, REVISION_TIMEOUT_SECONDS="1", CONTAINER_CONCURRENCY="1")
    first = asyncio.create_task(http_request(qp.port, get("/slow")))
    await asyncio.sleep(0.1)
    second = await http_request(qp.port, get("/slow"))
    assert (second.status, second.body) == (504, b"request timeout")
    assert (await first).status == 504
    assert qp.handler.breaker is not None and qp.handler.breaker.admitted == 0


async def test_timeout_after_response_started_appends_text(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with raw_upstream(app) as port:
        qp = await make_qp(port, REVISION_TIMEOUT_SECONDS="1")
        resp = await http_request(qp.port, get("/"))
        # Go's timeout handler writes after the fact: status stays 200, text appended (§2.8).
        assert (resp.status, resp.body) == (200, b"hellorequest timeout")


async def test_response_start_timeout_is_discarded_once_writing(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _line, _h, _ = await read_request_head(reader)
        if _line.startswith("GET /late"):
            await asyncio.sleep(3)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(1.5)
        writer.write(b"1\r\nb\r\n0\r\n\r\n")
        await writer.drain()

    async with raw_upstream(app) as port:
        qp = await make_qp(port, REVISION_RESPONSE_START_TIMEOUT_SECONDS="1")
        resp = await http_request(qp.port, get("/late"))
        assert (resp.status, resp.body) == (504, b"request timeout")
        resp = await http_request(qp.port, get("/early"))
        assert (resp.status, resp.body) == (200, b"ab")


async def test_idle_timeout_between_writes(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)

    async with raw_upstream(app) as port:
        qp = await make_qp(port, REVISION_IDLE_TIMEOUT_SECONDS="1")
        resp = await http_request(qp.port, get("/"))
        # Writes every 0.5 s keep it alive; then 1 s of silence ends it.
        assert (resp.status, resp.body) == (200, b"xxxrequest timeout")


# ---- stats ----------------------------------------------------------------------


async def test_stats_endpoint_reports_concurrency_and_proxied_split(
    make_qp: MakeQP, slow_app: tuple[SlowApp, int]
) -> None:
    app, port = slow_app
    qp = await make_qp(port)
    resp = await http_request(qp.metrics_port, get("/metrics", {"Accept": "text/plain"}))
    assert resp.status == 200 and resp.header("Content-Type") == "application/protobuf"
    assert decode_stat(resp.body).pod_name == "hello-00001-deployment-abc"
    holders = [
        asyncio.create_task(http_request(qp.port, get("/slow", {"K-Proxy-Request": "activator"}), timeout=20)),
        asyncio.create_task(http_request(qp.port, get("/slow"), timeout=20)),
    ]
    await asyncio.sleep(2.2)  # at least one full 1 s window with both in flight
    stat = decode_stat((await http_request(qp.metrics_port, get("/metrics"))).body)
    assert stat.average_concurrent_requests == pytest.approx(2.0, abs=0.05)
    assert stat.average_proxied_concurrent_requests == pytest.approx(1.0, abs=0.05)
    assert stat.process_uptime > 1.0
    app.release.set()
    await asyncio.gather(*holders)


async def test_probes_are_not_counted(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    _app, port = slow_app
    qp = await make_qp(port)
    for _ in range(5):
        await http_request(qp.port, get("/", KUBELET))
    await http_request(qp.port, get("/", {"K-Kubelet-Probe": "1"}))  # forwarded, not counted
    assert qp.handler.stats.requests == 0


# ---- websockets -----------------------------------------------------------------


async def test_websocket_tunnel_counts_in_flight(make_qp: MakeQP, slow_app: tuple[SlowApp, int]) -> None:
    app, port = slow_app
    qp = await make_qp(port, CONTAINER_CONCURRENCY="1", REVISION_RESPONSE_START_TIMEOUT_SECONDS="1")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as ws:
        for i in range(3):
            await ws.send_str(f"m{i}")
            msg = await ws.receive(timeout=5)
            assert msg.data == f"echo:m{i}"
        assert qp.handler.in_flight == 1
        assert qp.handler.breaker is not None and qp.handler.breaker.in_flight == 1
        # Established sockets are not cut by the response-start timeout.
        await asyncio.sleep(1.3)
        await ws.send_str("late")
        assert (await ws.receive(timeout=5)).data == "echo:late"
        # The one slot is held: a plain request queues behind the socket.
        queued = asyncio.create_task(http_request(qp.port, get("/fast"), timeout=10))
        await asyncio.sleep(0.2)
        assert not queued.done()
    assert (await queued).status == 200
    for _ in range(50):
        if qp.handler.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert qp.handler.in_flight == 0
    with contextlib.suppress(Exception):
        del app
