"""Request framing and request-line errors are refused before anything is forwarded,
whatever the packet boundaries (issue 13, requirement 2).

Each variant is sent to an in-process queue-proxy (CONTAINER_CONCURRENCY=1, so a held
breaker slot would stall the next request) in front of a real upstream that records every
byte it receives. A variant is sent in one write, in two writes (split in the middle) and
byte by byte. The client must get the expected status at once, and:

- errors in the request head (Transfer-Encoding, Host, versions, targets) never reach the
  upstream at all;
- errors in a chunked body never reach it when the head and the bad body arrive together;
  when the head arrived first it was already forwarded (as Go's reverse proxy would), so the
  relay is cancelled: the upstream connection is closed mid-body and the app never sees a
  complete request;
- a normal request on another connection is answered at once afterwards (the breaker slot
  of the bad request is not held).

Statuses follow Go's net/http server (server.go readRequest, transfer.go readTransfer),
except where noted in `VARIANTS`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import pytest

from tests.proxy.conftest import MakeQP
from tests.support import RawConnection, Response, get, raw_upstream, read_request_head

H = b"POST /bad HTTP/1.1\r\nHost: a\r\n"
CHUNKED = H + b"Transfer-Encoding: chunked\r\n\r\n"

# (name, bytes, expected status, error in the head?)
VARIANTS: list[tuple[str, bytes, int, bool]] = [
    # Transfer-Encoding other than exactly `chunked`: Go's readTransfer answers 501
    # "Unsupported transfer encoding" for each (RFC 9112 §6.1 allows 400 when chunked is not
    # final; Go's 501 is kept).
    ("te-xchunked", H + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, True),
    ("te-chunkedx", H + b"Transfer-Encoding: chunkedx\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, True),
    ("te-quoted", H + b'Transfer-Encoding: "chunked"\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501, True),
    ("te-param", H + b"Transfer-Encoding: chunked;q=1\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, True),
    ("te-gzip-chunked", H + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, True),
    # chunked not last: llhttp fails inside the value, before our check (RFC 9112 §6.1: 400; Go: 501).
    ("te-chunked-gzip", H + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, True),
    ("te-identity", H + b"Transfer-Encoding: identity\r\n\r\nhello", 501, True),
    ("te-identity-cl", H + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 501, True),
    # A second Transfer-Encoding line: llhttp fails on it before our check sees it (Go: 501).
    ("te-twice", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    # Both framings (RFC 9112 §6.3: "ought to be handled as an error"; llhttp refuses it;
    # Go would drop Content-Length): 400.
    ("cl-and-te", H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, True),
    ("cl-duplicate", H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, True),
    # Chunked bodies.
    ("size-not-hex", CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", 400, False),
    ("size-2^64+5", CHUNKED + b"%x\r\nhello\r\n0\r\n\r\n" % (2**64 + 5), 400, False),
    ("size-negative", CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", 400, False),
    ("size-0x", CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400, False),
    ("size-space", CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n", 400, False),
    ("ext-bare-lf", CHUNKED + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400, False),
    ("data-longer", CHUNKED + b"5\r\nhelloXX\r\n0\r\n\r\n", 400, False),
    ("lf-terminators", CHUNKED + b"5\nhello\n0\n\n", 400, False),
    ("last-chunk-no-crlf", CHUNKED + b"5\r\nhello\r\n0\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, False),
    ("trailer-cl", CHUNKED + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", 400, False),
    ("trailer-te", CHUNKED + b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, False),
    # Request lines (Go's readRequest and http1ServerSupportsRequest).
    ("star-get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, True),
    ("no-host", b"GET /bad HTTP/1.1\r\n\r\n", 400, True),
    ("two-hosts", b"GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
    ("host-malformed", b"GET /bad HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400, True),
    ("http-0.9", b"GET /bad HTTP/0.9\r\nHost: a\r\n\r\n", 505, True),
    # Go answers 400 to a line without a version; llhttp reports it as 0.9 (505 here).
    ("http-0.9-simple", b"GET /bad\r\n\r\n", 505, True),
    ("http-2.0", b"GET /bad HTTP/2.0\r\nHost: a\r\n\r\n", 505, True),
    ("target-relative", b"GET bad HTTP/1.1\r\nHost: a\r\n\r\n", 400, True),
]

MODES = ["one-write", "two-writes", "byte-by-byte"]


@dataclass
class Recorder:
    """A real HTTP/1.1 upstream that records the raw bytes of every connection and the
    requests it saw complete; answers each complete request with 200 `ok`."""

    raw: list[bytearray] = field(default_factory=list)
    completed: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # (method, url, body)
    open_raw: list[bytearray] = field(default_factory=list)  # raw bytes of the connections still open

    def seen(self, needle: bytes) -> bool:
        return any(needle in bytes(buf) for buf in self.raw)

    def open_with(self, needle: bytes) -> bool:
        return any(needle in bytes(buf) for buf in self.open_raw)


class _UpstreamParser:
    def __init__(self, rec: Recorder, writer: asyncio.StreamWriter) -> None:
        self.rec = rec
        self.writer = writer
        self.url = b""
        self.body = b""
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.rec.completed.append((self.parser.get_method(), self.url, self.body))
        self.url = self.body = b""
        self.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    rec = Recorder()
    writers: set[asyncio.StreamWriter] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        buf = bytearray()
        rec.raw.append(buf)
        rec.open_raw.append(buf)
        parser = _UpstreamParser(rec, writer)
        try:
            while data := await reader.read(65536):
                buf += data
                parser.parser.feed_data(data)
        except (ConnectionError, httptools.HttpParserError):
            pass
        finally:
            rec.open_raw.remove(buf)
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield rec, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in list(writers):
            writer.close()
        await _wait_for(lambda: not writers, 2)


async def _send(conn: RawConnection, data: bytes, mode: str) -> None:
    sock = conn.writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "one-write":
        parts = [data]
    elif mode == "two-writes":
        parts = [data[: len(data) // 2], data[len(data) // 2 :]]
    else:
        parts = [data[i : i + 1] for i in range(len(data))]
    for part in parts:
        if conn.writer.transport.is_closing():
            return
        try:
            conn.writer.write(part)
            await conn.writer.drain()
        except OSError:
            return  # refused part-way: the response is already on its way
        if len(parts) > 1:
            await asyncio.sleep(0.002)  # let the proxy read each part on its own


async def _wait_for(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


@pytest.mark.parametrize("mode", MODES)
async def test_framing_errors_are_refused_before_forwarding(
    make_qp: MakeQP, recorder: tuple[Recorder, int], mode: str
) -> None:
    rec, port = recorder
    qp = await make_qp(port, CONTAINER_CONCURRENCY="1")
    failures: list[str] = []
    for name, data, status, in_head in VARIANTS:
        rec.raw.clear()
        conn = await RawConnection.open(qp.port)
        started = time.monotonic()
        try:
            await _send(conn, data, mode)
            responses = await conn.read_responses(1, timeout=10)
            took = time.monotonic() - started
            got = responses[0].status if responses else 0
            closed = await conn.closed_by_peer(5)
        finally:
            conn.writer.transport.abort()
        if got != status or not closed:
            failures.append(f"{name}: status {got} (want {status}), closed={closed}")
        if took > 3 + (len(data) * 0.01 if mode == "byte-by-byte" else 0):
            failures.append(f"{name}: answered after {took:.1f} s")
        # Nothing of the bad request is forwarded when it failed before dispatch.
        if (in_head or mode == "one-write") and rec.seen(b"/bad"):
            failures.append(f"{name}: forwarded upstream: {bytes(b''.join(rec.raw))[:200]!r}")
        # Whatever was forwarded never completes there: the relay was cancelled.
        if not await _wait_for(lambda: not rec.open_with(b"/bad"), 3):
            failures.append(f"{name}: upstream connection left open mid-request")
        if any(url == b"/bad" for _m, url, _b in rec.completed):
            failures.append(f"{name}: the upstream saw a complete request")
        # The breaker slot (cc=1) is free: a normal request on another connection is served now.
        probe = await RawConnection.open(qp.port)
        t0 = time.monotonic()
        try:
            resp = await probe.request(get("/ok", host="a"), timeout=5)
        except TimeoutError:
            failures.append(f"{name}: a normal request after it timed out (slot held)")
        else:
            if resp.status != 200 or time.monotonic() - t0 > 2:
                failures.append(f"{name}: normal request got {resp.status} after {time.monotonic() - t0:.2f} s")
        finally:
            await probe.close()
    assert not failures, "\n".join(failures)
    assert qp.handler.in_flight == 0


async def test_pipelined_request_before_a_bad_one_is_answered_first(
    make_qp: MakeQP, recorder: tuple[Recorder, int]
) -> None:
    rec, port = recorder
    qp = await make_qp(port, CONTAINER_CONCURRENCY="1")
    conn = await RawConnection.open(qp.port)
    try:
        await conn.send(get("/first", host="a") + CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n")
        responses = await conn.read_responses(2, timeout=10)
        assert [r.status for r in responses] == [200, 400]
        assert await conn.closed_by_peer(5)
    finally:
        await conn.close()
    assert [url for _m, url, _b in rec.completed] == [b"/first"]
    assert not rec.seen(b"/bad")


async def _exchange(port: int, *requests: bytes) -> list[Response]:
    """Each request in turn on one connection, with its response."""
    conn = await RawConnection.open(port)
    try:
        return [await conn.request(request) for request in requests]
    finally:
        await conn.close()


async def test_absolute_form_goes_upstream_in_origin_form(make_qp: MakeQP, recorder: tuple[Recorder, int]) -> None:
    """Go's server takes Host from the absolute URI (RFC 9112 §3.2.2: the Host line is
    ignored), drops userinfo, and its reverse proxy writes the origin form."""
    rec, port = recorder
    qp = await make_qp(port)
    responses = await _exchange(
        qp.port,
        b"GET http://user:pw@example.com:81/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        b"GET http://example.org?y HTTP/1.1\r\nHost: other\r\n\r\n",
    )
    assert [r.status for r in responses] == [200, 200]
    upstream = bytes(b"".join(rec.raw))
    heads = [h for h in upstream.split(b"\r\n\r\n") if h]
    assert heads[0].startswith(b"GET /p/q?x=1 HTTP/1.1\r\n"), heads[0]
    assert b"\r\nHost: example.com:81\r\n" in heads[0] + b"\r\n"
    assert heads[1].startswith(b"GET /?y HTTP/1.1\r\n"), heads[1]
    assert b"\r\nHost: example.org\r\n" in heads[1] + b"\r\n"
    assert b"user" not in upstream and b"other" not in upstream


async def test_options_star_is_answered_by_the_server(make_qp: MakeQP, recorder: tuple[Recorder, int]) -> None:
    """Go's serverHandler answers `OPTIONS *` itself (200, Content-Length: 0)."""
    rec, port = recorder
    qp = await make_qp(port)
    options, after = await _exchange(qp.port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", get("/after", host="a"))
    assert (options.status, options.header("Content-Length"), options.body) == (200, "0", b"")
    assert after.status == 200  # the connection stays usable
    assert [url for _m, url, _b in rec.completed] == [b"/after"]


async def test_http10_without_host_is_served(make_qp: MakeQP, recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    qp = await make_qp(port)
    (resp,) = await _exchange(qp.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert resp.status == 200
    assert [url for _m, url, _b in rec.completed] == [b"/old"]


@pytest.mark.parametrize("split", [False, True])
async def test_upgrade_request_body_is_forwarded_as_a_body(make_qp: MakeQP, split: bool) -> None:
    """Go's server reads an upgrade request's Content-Length body as its body; the reverse
    proxy sends it upstream before any 101. Here the app reads the body and declines."""
    seen: list[bytes] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _line, headers, _pairs = await read_request_head(reader)
        body = await reader.readexactly(int(headers["content-length"]))
        seen.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        conn = await RawConnection.open(qp.port)
        head = (
            b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 10\r\n\r\n"
        )
        try:
            if split:
                await conn.send(head + b"hel")
                await asyncio.sleep(0.05)
                await conn.send(b"lo")
                await asyncio.sleep(0.05)
                await conn.send(b"world")
            else:
                await conn.send(head + b"helloworld")
            responses = await conn.read_responses(1, timeout=10)
        finally:
            await conn.close()
    assert [(r.status, r.body) for r in responses] == [(200, b"helloworld")]
    assert seen == [b"helloworld"]
