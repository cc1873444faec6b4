"""Websockets end to end through `python -m proxy` with a real client and server (aiohttp):
the tunnel, the timeouts of §2.8 on an established socket, and drain/shutdown grace (§2.11)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.support import QueueProxySubprocess

from .wsapp import ws_app


async def test_established_socket_is_not_cut_by_the_start_or_idle_timeout() -> None:
    async with ws_app() as port:
        qp = QueueProxySubprocess(
            port,
            REVISION_TIMEOUT_SECONDS="60",
            REVISION_RESPONSE_START_TIMEOUT_SECONDS="1",
            REVISION_IDLE_TIMEOUT_SECONDS="1",
        ).start()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "HELLO"
                # Users report long-lived sockets cut at the response-start timeout: the 101 is
                # the response's start, and tunnelled bytes are not response writes (§2.8).
                await asyncio.sleep(2.5)
                await ws.send_str("still there")
                assert (await ws.receive(timeout=5)).data == "STILL THERE"
                await ws.send_bytes(b"\x00" * 1_000_000)
                assert len((await ws.receive(timeout=10)).data) == 1_000_000
        finally:
            qp.stop()


async def test_total_timeout_still_ends_a_socket() -> None:
    async with ws_app() as port:
        qp = QueueProxySubprocess(port, REVISION_TIMEOUT_SECONDS="1").start()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as ws:
                started = time.monotonic()
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
                assert 0.8 < time.monotonic() - started < 3
        finally:
            qp.stop()


async def test_drain_gives_open_sockets_the_grace_then_exits() -> None:
    async with ws_app() as port:
        # The contract's 60 s in-flight grace (§2.11), shortened for the test.
        qp = QueueProxySubprocess(port, SLUICE_DRAIN_QUIET_PERIOD="0.5", SLUICE_SHUTDOWN_IN_FLIGHT_TIMEOUT="3").start()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{qp.port}/ws") as ws:
                await ws.send_str("a")
                assert (await ws.receive(timeout=5)).data == "A"
                qp.terminate()
                started = time.monotonic()
                await asyncio.sleep(1.5)  # drained; the servers are shut; the socket lives on
                await ws.send_str("b")
                assert (await ws.receive(timeout=5)).data == "B"
                code = await asyncio.to_thread(lambda: qp.proc.wait(10) if qp.proc else None)
                assert code == 0
                assert 2.5 < time.monotonic() - started < 6
        finally:
            qp.stop()


async def test_drain_ends_early_when_the_socket_closes() -> None:
    async with ws_app() as port:
        qp = QueueProxySubprocess(port, SLUICE_DRAIN_QUIET_PERIOD="0.5", SLUICE_SHUTDOWN_IN_FLIGHT_TIMEOUT="30").start()
        try:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"http://127.0.0.1:{qp.port}/ws")
                await ws.send_str("a")
                assert (await ws.receive(timeout=5)).data == "A"
                qp.terminate()
                await asyncio.sleep(1.0)
                started = time.monotonic()
                await ws.close()
                code = await asyncio.to_thread(lambda: qp.proc.wait(10) if qp.proc else None)
                assert code == 0 and time.monotonic() - started < 3
        finally:
            qp.stop()
