"""How upstream responses are framed on their way through (sluice/http/client.py).

Plain Content-Length responses are framed without httptools; everything else goes
to the parser. These tests drive both paths with scripted upstream bytes, split
across reads the way a real app's writes can be, and check what the client gets
and whether the upstream connection is reused."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sluice.http.client import UpstreamConnection, UpstreamPool, WholeResponseAsParts
from sluice.http.headers import ResponseHead
from tests.proxy.conftest import MakeQP
from tests.support import RawConnection, get, http_request, raw_upstream, read_request_head

Script = Sequence[bytes]


class Scripted:
    """An upstream answering every request with the same byte pieces, sent as
    separate writes with a pause between, and counting its connections."""

    def __init__(self, pieces: Script, close_after: bool = False) -> None:
        self.pieces = pieces
        self.close_after = close_after
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            await read_request_head(reader)
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            if self.close_after:
                return


async def _twice(make_qp: MakeQP, script: Scripted, request: bytes = get("/"), head: bool = False) -> list[bytes]:
    async with raw_upstream(script) as port:
        qp = await make_qp(port)
        conn = await RawConnection.open(qp.port)
        bodies = []
        for _ in range(2):
            resp = await conn.request(request, head=head)
            assert resp.status in (200, 204, 304), resp
            bodies.append(resp.body)
        await conn.close()
        assert qp.handler.in_flight == 0
    return bodies


async def test_body_split_across_reads(make_qp: MakeQP) -> None:
    script = Scripted([b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 10\r\n\r\nhel", b"lo", b"world"])
    assert await _twice(make_qp, script) == [b"helloworld", b"helloworld"]
    assert script.connections == 1  # framed exactly: the connection was reused


async def test_bytes_beyond_content_length_are_not_relayed_and_connection_is_dropped(make_qp: MakeQP) -> None:
    script = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"])
    assert await _twice(make_qp, script) == [b"ok", b"ok"]
    assert script.connections == 2  # out of step after the extra bytes: not reused


async def test_connection_close_and_http10_responses_are_not_reused(make_qp: MakeQP) -> None:
    for pieces in (
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
        [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ):
        # The upstream keeps its end open: only the proxy's reading of the head closes it.
        script = Scripted(pieces)
        assert await _twice(make_qp, script) == [b"ok", b"ok"]
        assert script.connections == 2
    kept = Scripted([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"])
    assert await _twice(make_qp, kept) == [b"ok", b"ok"]
    assert kept.connections == 1


async def test_hop_by_hop_response_headers_dropped_on_both_paths(make_qp: MakeQP) -> None:
    for framing in (b"Content-Length: 2\r\n\r\nok", b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"):
        head = (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\n"
            b"Keep-Alive: timeout=5\r\nX-Private: 1\r\nX-App: a\r\n"
        )
        async with raw_upstream(Scripted([head + framing])) as port:
            qp = await make_qp(port)
            resp = await http_request(qp.port, get("/"))
        assert (resp.status, resp.body) == (200, b"ok")
        names = {name.lower() for name, _ in resp.headers}
        assert "x-app" in names and "date" in names
        assert not names & {"connection", "keep-alive", "x-private"}


async def test_no_body_statuses_and_head(make_qp: MakeQP) -> None:
    assert await _twice(make_qp, Scripted([b"HTTP/1.1 204 No Content\r\n\r\n"])) == [b"", b""]
    head = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"])
    assert await _twice(make_qp, head, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", head=True) == [b"", b""]
    assert head.connections == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",  # conflicting lengths
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",  # not a number
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",  # not a status
        b"HTTP/1.1 200 OK\r\nBad Name: v\r\nContent-Length: 2\r\n\r\nok",  # space in a field name
    ],
)
async def test_malformed_heads_are_left_to_the_parser_which_rejects_them(make_qp: MakeQP, raw: bytes) -> None:
    async with raw_upstream(Scripted([raw])) as port:
        qp = await make_qp(port)
        resp = await http_request(qp.port, get("/"))
    assert resp.status == 502
    assert resp.body.startswith(b"malformed HTTP response")


async def test_upstream_closing_mid_body_aborts_the_client(make_qp: MakeQP) -> None:
    script = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"], close_after=True)
    async with raw_upstream(script) as port:
        qp = await make_qp(port)
        conn = await RawConnection.open(qp.port)
        await conn.send(get("/"))
        data = await asyncio.wait_for(conn.reader.read(), 5)  # until the proxy closes
        assert data.endswith(b"half")
        await conn.close()
        assert qp.handler.in_flight == 0


def test_response_head_verdicts() -> None:
    plain = ResponseHead(b"Server: x\r\nDate: d\r\nContent-Length: 2\r\nConnection: keep-alive\r\n")
    assert (plain.plain, plain.content_length, plain.has_date) == (True, 2, True)
    assert plain.block == b"Server: x\r\nDate: d\r\n"
    assert plain.connection == frozenset({b"keep-alive"})
    chunked = ResponseHead(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")
    assert (chunked.plain, chunked.chunked, chunked.content_length) == (False, True, None)
    folded = ResponseHead(b"X-A: 1\r\n  continued\r\nContent-Length: 2\r\n")
    assert not folded.plain
    # The same line seen again comes from the cache with the same meaning.
    again = ResponseHead(b"Server: x\r\nDate: d\r\nContent-Length: 2\r\nConnection: keep-alive\r\n")
    assert (again.block, again.content_length, again.connection) == (plain.block, 2, plain.connection)



class _PausingSink(WholeResponseAsParts):
    """A ResponseSink that applies back-pressure (pauses the upstream) on every body chunk,
    as a slow client's full buffer does, and never lifts it."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.body = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_interim(self, status: int, head: ResponseHead) -> None: ...
    def on_response_head(self, status: int, reason: bytes, head: ResponseHead) -> None: ...

    def on_response_body(self, data: bytes) -> None:
        self.body += data
        self.conn.pause_producing()

    def on_response_end(self) -> None:
        self.done.set_result(None)

    def on_upstream_error(self, exc: BaseException) -> None:
        self.done.set_exception(exc)

    def on_upgrade(self, status: int, reason: bytes, head: ResponseHead, leftover: bytes) -> None: ...
    def on_read_done(self) -> None: ...
    def pause_request_body(self) -> None: ...
    def resume_request_body(self) -> None: ...


@pytest.mark.parametrize("parser", [False, True])
async def test_connection_paused_for_back_pressure_reads_again_once_pooled(parser: bool) -> None:
    """The last body bytes can fill a slow client's buffer, pausing the upstream read just
    before the connection goes back to the pool; its next response must still be read."""
    framing = b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" if parser else b"Content-Length: 2\r\n\r\nok"
    script = Scripted([b"HTTP/1.1 200 OK\r\n" + framing])
    async with raw_upstream(script) as port:
        pool = UpstreamPool("127.0.0.1", port, max_idle=1)
        try:
            for _ in range(2):
                conn = pool.acquire_nowait() or await pool.connect()
                sink = _PausingSink(conn)
                conn.begin(sink, get("/"), head_request=False, has_body=False)
                await asyncio.wait_for(sink.done, 5)
                assert sink.body == b"ok"
            assert script.connections == 1
        finally:
            pool.close()
