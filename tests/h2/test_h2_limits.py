"""HTTP/2 per-connection limits, fast and in-process (issue 13, requirement 3); the floods
with a latency probe and RSS are in test_h2_floods.py (slow)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from sluice.http.h2limits import RESET_BURST
from sluice.http.h2server import MAX_CONCURRENT_STREAMS
from tests.h2.flood import END_HEADERS, GOAWAY, HEADERS, PREFACE, RST_STREAM, SETTINGS, batch, frame
from tests.proxy.conftest import MakeQP

REFUSED_STREAM = 0x7
ENHANCE_YOUR_CALM = 0xB


@pytest.fixture
async def silent_upstream() -> AsyncIterator[int]:
    """Accepts connections and never answers: every forwarded stream stays open."""
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    for writer in writers:
        writer.close()


async def _frames(reader: asyncio.StreamReader, timeout: float) -> AsyncIterator[tuple[int, int, bytes]]:
    """(type, stream, payload) of each frame the server sends, until EOF or `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            head = await asyncio.wait_for(reader.readexactly(9), max(0.01, deadline - loop.time()))
            payload = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[:3], "big")), 5)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return
        yield head[3], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload


async def test_concurrent_streams_are_capped_before_settings_are_acknowledged(
    make_qp: MakeQP, silent_upstream: int
) -> None:
    """h2 applies our SETTINGS_MAX_CONCURRENT_STREAMS only once the client ACKs them; a
    client that never does still gets REFUSED_STREAM past the advertised limit."""
    qp = await make_qp(silent_upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", qp.port)
    try:
        block = b"\x82\x86\x84\x41\x01a"  # GET, http, /, :authority a (HPACK, no indexing)
        count = MAX_CONCURRENT_STREAMS + 5
        opens = b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) for i in range(count))
        writer.write(PREFACE + frame(SETTINGS, 0, 0) + opens)  # no SETTINGS ACK, no END_STREAM
        refused: list[int] = []
        async for kind, stream, payload in _frames(reader, 10):
            if kind == RST_STREAM and struct.unpack(">I", payload)[0] == REFUSED_STREAM:
                refused.append(stream)
                if len(refused) == 5:
                    break
        assert refused == [1 + 2 * i for i in range(MAX_CONCURRENT_STREAMS, count)]
        # The streams it accepted are still running (refusals are not a connection error).
        assert qp.handler.in_flight == MAX_CONCURRENT_STREAMS
    finally:
        writer.close()


async def test_rapid_reset_gets_goaway_enhance_your_calm(make_qp: MakeQP, silent_upstream: int) -> None:
    qp = await make_qp(silent_upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", qp.port)
    try:
        pairs, _ = batch("rapid-reset", 1, RESET_BURST + 100)
        writer.write(PREFACE + frame(SETTINGS, 0, 0) + pairs)
        goaway = None
        async for kind, _stream, payload in _frames(reader, 10):
            if kind == GOAWAY:
                goaway = struct.unpack(">II", payload[:8])
                break
        assert goaway is not None
        last_stream, code = goaway
        assert code == ENHANCE_YOUR_CALM
        assert 1 <= last_stream < 1 + 2 * (RESET_BURST + 100)
    finally:
        writer.close()
    # Every cancelled stream freed its request: nothing is left in flight.
    for _ in range(100):
        if qp.handler.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert qp.handler.in_flight == 0
