"""Long-lived requests through a real `python -m proxy` (issue 13, requirement 5): websockets
and server-sent-event streams outlive the response-start timeout (knative/serving#16169), a
websocket past the revision timeout and one still open at the drain's deadline are ended with
Close frames 1001 at both ends, and an event stream still open at the drain's deadline ends with
its last chunk: real sockets, aiohttp's websocket client and server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.stream_app import echo_for, make_app, read_events
from tests.support import QueueProxySubprocess


@dataclass
class App:
    port: int = 0
    close_codes: list[int | None] = field(default_factory=list)  # what the app's websockets saw


@asynccontextmanager
async def long_lived_app() -> AsyncIterator[App]:
    state = App()
    runner = web.AppRunner(make_app(state.close_codes), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    state.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        await runner.cleanup()


@asynccontextmanager
async def queue_proxy(app: App, **env: str) -> AsyncIterator[QueueProxySubprocess]:
    qp = QueueProxySubprocess(app.port, SLUICE_DRAIN_QUIET_PERIOD="0.2", **env).start()
    try:
        yield qp
    finally:
        qp.terminate()
        await asyncio.to_thread(qp.wait, 20)


async def test_websocket_and_event_stream_outlive_the_response_start_timeout() -> None:
    async with (
        long_lived_app() as app,
        queue_proxy(app, REVISION_RESPONSE_START_TIMEOUT_SECONDS="1") as qp,
        aiohttp.ClientSession() as session,
    ):
        # The timer is armed: a response that has not started after 1 s gets a 504.
        async with session.get(f"http://127.0.0.1:{qp.port}/late") as resp:
            assert (resp.status, await resp.text()) == (504, "request timeout")
        async with session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as sock:
            assert await echo_for(sock, 2.5, pause=0.25) >= 5
            assert not sock.closed
        async with session.get(f"http://127.0.0.1:{qp.port}/sse?n=12") as resp:
            assert resp.status == 200
            events = await read_events(resp)
        assert events == [str(i) for i in range(12)]  # 2.4 s of events, ended by the app


async def test_revision_timeout_ends_a_websocket_with_close_frames() -> None:
    async with long_lived_app() as app, queue_proxy(app, REVISION_TIMEOUT_SECONDS="2") as qp:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as sock:
            t0 = time.monotonic()
            await echo_for(sock, 0.0)
            msg = await sock.receive(timeout=10)
            elapsed = time.monotonic() - t0
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            assert msg.data == 1001  # going away, not a cut connection
            assert 1.5 < elapsed < 5
        for _ in range(50):
            if app.close_codes:
                break
            await asyncio.sleep(0.1)
        assert app.close_codes == [1001]  # the app got a Close frame too


async def test_drain_waits_for_long_lived_requests_then_ends_them_cleanly() -> None:
    async with long_lived_app() as app:
        # SIGKILL would come at the revision timeout (4 s): the QP ends what is open 1.5 s before.
        qp = QueueProxySubprocess(app.port, REVISION_TIMEOUT_SECONDS="4", SLUICE_DRAIN_QUIET_PERIOD="0.3").start()
        async with aiohttp.ClientSession() as session:
            sock = await session.ws_connect(f"http://127.0.0.1:{qp.port}/ws")
            stream = await session.get(f"http://127.0.0.1:{qp.port}/sse")
            assert stream.status == 200
            term_at = time.monotonic()
            qp.terminate()
            events_task = asyncio.create_task(read_events(stream))
            # Past the drain's quiet period the websocket still works...
            await asyncio.sleep(1.0)
            await echo_for(sock, 0.0)
            # ...until the drain's deadline: a Close frame, 1001.
            msg = await sock.receive(timeout=10)
            closed_after = time.monotonic() - term_at
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            assert msg.data == 1001
            assert 2.0 < closed_after < 4.0
            await sock.close()
            # The event stream ran until then and ended with its last chunk (no payload error).
            events = await events_task
            assert len(events) >= 8, events
            assert events == [str(i) for i in range(len(events))]
            stream.release()
        code, err = await asyncio.to_thread(qp.wait, 20)
        assert code == 0, err
        assert "closing long-lived requests at the drain deadline" in err
        assert app.close_codes == [1001]
