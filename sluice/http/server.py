"""HTTP/1.1 server side: one `ServerConnection` (asyncio.Protocol + httptools) per client.

The handler is a plain callable invoked with an `Exchange` once the request head
is parsed; it answers synchronously (probes, errors) or wires the exchange to an
upstream and returns. No task is created per request on the fast path: the event
loop drives both sockets through their Protocol callbacks.

Flow control (why it matters: a 1 GB upload must not be buffered):
- request body: chunks go straight to the exchange's body sink; when the sink's
  destination is full it calls `pause_body()`, which stops reading this socket;
- response body: when this socket's write buffer is full, asyncio calls
  `pause_writing()`, which we pass to the exchange's `producer` (the upstream).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from .headers import Header, error_response, http_date, origin_form, plain_response, reason_phrase
from .outbox import OutboxWriter

if TYPE_CHECKING:
    from .h2server import H2ServerConnection

__all__ = [
    "BodySink",
    "ClientConnection",
    "Exchange",
    "HttpExchange",
    "HttpServer",
    "Producer",
    "ServerLimits",
    "TunnelPeer",
]

# Why a connection's reading is paused; reading resumes when no reason is left.
_BLOCK_PIPELINE = 1  # requests queued behind the current one (answered in order)
_BLOCK_BODY = 2  # the body sink's destination is full
_BLOCK_UPGRADE = 4  # an upgrade is being negotiated upstream

# Request headers the connection itself acts on (framing, Host rules and 100-continue).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"expect", b"host"})

# The bytes Go's httpguts.ValidHostHeader allows in Host (reg-name, IP literals, port);
# `translate(None, _HOST_BYTES)` leaves what is not allowed (one C call per request).
_HOST_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!$%&'()*+,-.:;=[]_~"

# Go's rstAvoidanceDelay: how long a refused connection is read (and discarded) after
# its error response, before it is closed.
_RST_AVOIDANCE_DELAY = 0.5

# Buffer at most this much request body before a sink is attached (breaker queue).
_BODY_BUFFER_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    # Go's http.DefaultMaxHeaderBytes: request line + headers beyond it get 431.
    max_header_bytes: int = 1 << 20
    # Go server ReadHeaderTimeout used by the queue-proxy (CONTRACT.md §2.3).
    read_header_timeout: float = 60.0
    # Requests parsed ahead of the one being answered before reading pauses.
    max_pipelined: int = 16


class BodySink(Protocol):
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_body_end(self) -> None: ...


class Producer(Protocol):
    """Whatever feeds the response; paused while the client is slow to read."""

    def pause_producing(self) -> None: ...
    def resume_producing(self) -> None: ...


class TunnelPeer(Protocol):
    """The other end of an upgraded connection (a websocket tunnelled byte for byte)."""

    def tunnel_write(self, data: bytes) -> None: ...
    def tunnel_eof(self) -> None: ...
    def pause_producing(self) -> None: ...
    def resume_producing(self) -> None: ...


class ClientConnection(Protocol):
    """What a handler reaches through `HttpExchange.conn` (an HTTP/1.1 or HTTP/2 connection)."""

    @property
    def xff_line(self) -> bytes: ...
    @property
    def transport(self) -> asyncio.Transport | None: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def block_read(self, reason: int) -> None: ...
    def unblock_read(self, reason: int) -> None: ...


class HttpExchange(Protocol):
    """The request/response surface handlers and the Forwarder use: an HTTP/1.1 `Exchange`
    or an HTTP/2 stream (h2server.H2Stream). A Protocol, so the compiled hot path checks no
    concrete class at run time (mypyc does for class-typed arguments)."""

    on_abort: Callable[[], None] | None
    producer: Producer | None
    url: bytes  # sluice local's ingress rewrites it

    @property
    def conn(self) -> ClientConnection: ...
    @property
    def http2(self) -> bool: ...
    @property
    def method(self) -> bytes: ...
    @property
    def version(self) -> bytes: ...
    @property
    def headers(self) -> list[Header]: ...
    @property
    def watched(self) -> dict[bytes, bytes]: ...
    @property
    def keep_alive(self) -> bool: ...
    @property
    def upgrade(self) -> bool: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def chunked_request(self) -> bool: ...
    @property
    def head_request(self) -> bool: ...
    @property
    def body_done(self) -> bool: ...
    @property
    def has_body(self) -> bool: ...
    @property
    def client_ip(self) -> bytes: ...
    @property
    def start_time(self) -> float: ...
    @property
    def last_write(self) -> float: ...
    @property
    def status(self) -> int: ...
    @property
    def body_bytes(self) -> int: ...
    @property
    def response_started(self) -> bool: ...
    @property
    def response_done(self) -> bool: ...
    @property
    def aborted(self) -> bool: ...

    def header(self, lname: bytes) -> bytes | None: ...
    def set_body_sink(self, sink: BodySink) -> None: ...
    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def respond(self, data: bytes, close: bool = False) -> None: ...
    def respond_error(self, status: int, message: str) -> None: ...
    def respond_text(
        self, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = (), content_type: bytes | None = None
    ) -> None: ...
    def write_interim(self, status: int, header_block: bytes = b"") -> None: ...
    def start_response(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        no_body: bool = False,
        has_date: bool = False,
    ) -> None: ...
    def respond_whole(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        body: bytes,
        no_body: bool = False,
        has_date: bool = False,
    ) -> None: ...
    def flush(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def end(self, trailer_block: bytes = b"") -> None: ...
    def set_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None: ...
    def terminate_with(self, text: bytes) -> None: ...
    def abort(self) -> None: ...
    def upgrade_to_tunnel(self, head: bytes, peer: TunnelPeer) -> None: ...


class _HeaderTooLarge(Exception):
    pass


class _BadRequest(Exception):
    """Raised from a parser callback after `_parse_error` is set: the request is refused
    before it is handed to the handler (nothing is forwarded)."""


class Exchange:
    """One request and its response on a server connection."""

    # h2 hook: the Forwarder sends HTTP/2 requests upstream as h2c (CONTRACT.md §2.6); an
    # h2server.H2Stream says True. A class attribute: no per-request cost.
    http2 = False

    __slots__ = (
        "_body_buffered",
        "_body_chunks",
        "_body_sink",
        "_head",
        "aborted",
        "body_bytes",
        "body_done",
        "chunked_request",
        "conn",
        "content_length",
        "expect_continue",
        "head_request",
        "headers",
        "keep_alive",
        "last_write",
        "method",
        "on_abort",
        "producer",
        "response_done",
        "response_mode",
        "response_started",
        "start_time",
        "status",
        "upgrade",
        "upgrade_leftover",
        "url",
        "version",
        "watched",
    )

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.method = b""
        self.url = b""
        self.version = b"1.1"
        self.headers: list[Header] = []
        self.watched: dict[bytes, bytes] = {}
        self.keep_alive = True
        self.upgrade = False
        self.upgrade_leftover = b""
        self.content_length: int | None = None
        self.chunked_request = False
        self.expect_continue = False
        self.head_request = False
        self.body_done = False
        self._body_chunks: list[bytes] = []
        self._body_buffered = 0
        self._body_sink: BodySink | None = None
        self.response_started = False
        self.response_done = False
        self._head = b""  # a response head not yet written (sent with the first body bytes)
        # 0 = Content-Length, 1 = chunked, 2 = until close, 3 = no body
        self.response_mode = 0
        self.status = 0
        self.body_bytes = 0  # response body bytes relayed (request logs' Response.Size)
        self.producer: Producer | None = None
        self.on_abort: Callable[[], None] | None = None
        self.aborted = False
        self.last_write = 0.0
        self.start_time = 0.0

    # ---- request side -------------------------------------------------------

    @property
    def client_ip(self) -> bytes:
        return self.conn.client_ip

    @property
    def has_body(self) -> bool:
        return self.chunked_request or bool(self.content_length)

    def header(self, lname: bytes) -> bytes | None:
        """First value of a header by lower-cased name (a linear scan; use `watched` on hot paths)."""
        for name, _raw, value in self.headers:
            if name == lname:
                return value
        return None

    def set_body_sink(self, sink: BodySink) -> None:
        """Starts delivering the request body: buffered chunks first, then as they arrive."""
        self._body_sink = sink
        chunks, self._body_chunks = self._body_chunks, []
        self._body_buffered = 0
        for chunk in chunks:
            sink.on_request_body(chunk)
        if self.body_done:
            sink.on_request_body_end()
        elif self.conn.current is self:
            self.conn.unblock_read(_BLOCK_BODY)

    def pause_body(self) -> None:
        self.conn.block_read(_BLOCK_BODY)

    def resume_body(self) -> None:
        self.conn.unblock_read(_BLOCK_BODY)

    def _on_body(self, data: bytes) -> None:
        if self._body_sink is not None:
            self._body_sink.on_request_body(data)
            return
        self._body_chunks.append(data)
        self._body_buffered += len(data)
        if self._body_buffered >= _BODY_BUFFER_LIMIT:
            self.conn.block_read(_BLOCK_BODY)

    # ---- response side ------------------------------------------------------

    def respond(self, data: bytes, close: bool = False) -> None:
        """Writes a complete, prepared response (see headers.plain_response)."""
        if self.response_started or self.aborted:
            return
        self.response_started = True
        self.conn.write(data)
        if close:
            self.keep_alive = False
        self._done()

    def respond_error(self, status: int, message: str) -> None:
        """Go's `http.Error` shape (text/plain, nosniff, message + newline)."""
        close = not self.keep_alive or not self.body_done
        self.status = status
        self.respond(error_response(status, message, close=close, head_only=self.head_request), close)

    def respond_text(
        self, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = (), content_type: bytes | None = None
    ) -> None:
        close = not self.keep_alive or not self.body_done
        self.status = status
        ctype = content_type if content_type is not None else (b"text/plain; charset=utf-8" if body else None)
        self.respond(
            plain_response(status, body, ctype, extra, close=close, head_only=self.head_request), close
        )

    def write_interim(self, status: int, header_block: bytes = b"") -> None:
        """A 1xx response (e.g. 100 Continue relayed from upstream); HTTP/1.0 clients get none."""
        if self.response_started or self.aborted or self.version == b"1.0":
            return
        self.conn.write(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason_phrase(status), header_block))

    def start_response(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        no_body: bool = False,
        has_date: bool = False,
    ) -> None:
        """Writes the status line and headers; the body follows with `write` and `end`.

        `header_block` is pre-serialised `Name: value\\r\\n` lines without framing
        headers; this method adds Date (if absent) and the framing it chooses.
        """
        if self.response_started or self.aborted:
            return
        # Held back until the first body bytes or `flush()`, so a small response
        # leaves in one write (one syscall) instead of two.
        self._head = self._response_head(status, reason, header_block, content_length, no_body, has_date)

    def respond_whole(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        body: bytes,
        no_body: bool = False,
        has_date: bool = False,
    ) -> None:
        """`start_response`, `write(body)` and `end()` in one call, for a relayed response
        whose body is all here (most responses of a keep-alive app): one write."""
        if self.response_started or self.aborted:
            return
        head = self._response_head(status, reason, header_block, content_length, no_body, has_date)
        if body and self.response_mode == 0:
            self.body_bytes = len(body)
            self.conn.writelines((head, body))
        elif body and self.response_mode != 3:
            self._head = head  # chunked or close-delimited framing: the general path
            self.write(body)
            self.end()
            return
        else:
            self.conn.write(head)
        if self.response_mode == 2:
            self.keep_alive = False
        self._done()

    def _response_head(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        no_body: bool,
        has_date: bool,
    ) -> bytes:
        """The status line and headers, with Date (if absent) and the framing chosen here;
        marks the response started."""
        self.response_started = True
        self.status = status
        self.last_write = time.monotonic()
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason), header_block]
        if not has_date:  # Go's server adds Date when the handler did not
            parts.append(b"Date: " + http_date() + b"\r\n")
        if no_body or self.head_request:
            self.response_mode = 3
            if content_length is not None:
                parts.append(b"Content-Length: %d\r\n" % content_length)
        elif content_length is not None:
            self.response_mode = 0
            parts.append(b"Content-Length: %d\r\n" % content_length)
        elif self.version == b"1.1":
            self.response_mode = 1
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self.response_mode = 2
            self.keep_alive = False
        if not self.body_done and self.response_mode != 1:
            # The request body is still arriving; the connection cannot be reused
            # safely unless the body is fully read, so say we close (Go does likewise).
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def flush(self) -> None:
        """Sends a held-back response head (the producer has no more bytes for now)."""
        head = self._head
        if head:
            self._head = b""
            self.conn.write(head)

    def write(self, data: bytes) -> None:
        if self.aborted or self.response_done or not data:
            return
        self.last_write = time.monotonic()
        self.body_bytes += len(data)
        mode = self.response_mode
        head = self._head
        if head:
            self._head = b""
        if mode == 1:
            self.conn.writelines((head, b"%x\r\n" % len(data), data, b"\r\n"))
        elif mode != 3:
            if head:
                self.conn.writelines((head, data))
            else:
                self.conn.write(data)
        elif head:
            self.conn.write(head)

    def end(self, trailer_block: bytes = b"") -> None:
        if self.aborted or self.response_done:
            return
        head = self._head
        self._head = b""
        if self.response_mode == 1:
            self.conn.write(head + b"0\r\n" + trailer_block + b"\r\n")
        else:
            if head:
                self.conn.write(head)
            if self.response_mode == 2:
                self.keep_alive = False
        self._done()

    def terminate_with(self, text: bytes) -> None:
        """Go's timeout handler after the response started (CONTRACT.md §2.8): the text
        is appended to the body and the response is terminated. With Content-Length
        framing the extra bytes cannot be sent, so the connection is closed short."""
        if self.aborted or self.response_done:
            return
        self.flush()
        if self.response_mode == 1:
            self.write(text)
            self.end()
        elif self.response_mode == 2:
            self.conn.write(text)
            self.keep_alive = False
            self._done()
        else:
            self.abort()

    def set_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """h2 hook: response trailers are relayed on HTTP/2 streams only (gRPC); HTTP/1.1
        responses intentionally drop them (see headers.ResponseHead)."""
        return None

    def abort(self) -> None:
        """Drops the connection: the response cannot be completed."""
        if self.aborted:
            return
        self.aborted = True
        self.response_done = True
        self.conn.close()

    def upgrade_to_tunnel(self, head: bytes, peer: TunnelPeer) -> None:
        """Writes the 101 head and switches the connection to a raw byte tunnel."""
        if self.aborted:
            return
        self.response_started = True
        self.status = 101
        self.conn.write(head)
        self.conn.start_tunnel(self, peer)

    def _done(self) -> None:
        self.response_done = True
        self.conn.exchange_done(self)

    # Called by the connection.
    def _client_gone(self) -> None:
        if self.aborted:
            return
        self.aborted = True
        callback, self.on_abort = self.on_abort, None
        if callback is not None:
            callback()


Handler = Callable[[HttpExchange], None]


class _Discard:
    """The tunnel peer of a connection that is being closed after an error response: the
    client's remaining bytes are read and dropped (see ServerConnection.linger_close)."""

    def tunnel_write(self, data: bytes) -> None:
        return None

    def tunnel_eof(self) -> None:
        return None

    def pause_producing(self) -> None:
        return None

    def resume_producing(self) -> None:
        return None


_DISCARD = _Discard()


class _UpgradeBody:
    """The tunnel slot while the rest of an upgrade request's Content-Length body arrives
    (see ServerConnection._upgrade_body); then the connection waits for the upgrade."""

    __slots__ = ("conn", "ex", "left")

    def __init__(self, conn: ServerConnection, ex: Exchange, left: int) -> None:
        self.conn = conn
        self.ex = ex
        self.left = left

    def tunnel_write(self, data: bytes) -> None:
        ex = self.ex
        take = data[: self.left]
        self.left -= len(take)
        ex._on_body(take)
        if self.left:
            return
        conn = self.conn
        conn.tunnel_peer = None
        ex.upgrade_leftover += data[len(take) :]
        conn.block_read(_BLOCK_UPGRADE)
        ex.body_done = True
        sink = ex._body_sink
        if sink is not None:
            sink.on_request_body_end()

    def tunnel_eof(self) -> None:
        return None

    def pause_producing(self) -> None:
        producer = self.ex.producer
        if producer is not None:
            producer.pause_producing()

    def resume_producing(self) -> None:
        producer = self.ex.producer
        if producer is not None:
            producer.resume_producing()


class ServerConnection(OutboxWriter, asyncio.Protocol):
    __slots__ = (
        "_good_host",
        "_header_bytes",
        "_header_deadline",
        "_hosts",
        "_parse_error",
        "_read_block",
        "client_ip",
        "closed",
        "current",
        "h2",
        "parser",
        "parsing",
        "pending",
        "server",
        "transport",
        "tunnel_peer",
        "write_paused",
        "xff_line",
    )

    def __init__(self, server: HttpServer) -> None:
        OutboxWriter.__init__(self)
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.xff_line = b""  # `X-Forwarded-For: <client>\r\n`, the common case, built once per connection
        self.parsing: Exchange | None = None
        self.current: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.closed = False
        self.tunnel_peer: TunnelPeer | None = None
        self.h2: H2ServerConnection | None = None  # h2 hook: set once the connection speaks HTTP/2
        self.write_paused = False
        self._read_block = 0
        self._header_bytes = 0
        self._hosts = 0  # Host lines of the request being parsed
        self._good_host = b""  # the last Host value found valid on this connection
        self._header_deadline: asyncio.TimerHandle | None = None
        self._parse_error: tuple[int, str] | None = None

    # ---- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._attach_outbox()
        transport = self.transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0]).encode()
            self.xff_line = b"X-Forwarded-For: " + self.client_ip + b"\r\n"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            # h2 hook: HTTP/2 over TLS, negotiated by ALPN (CONTRACT.md §2.3 TLS port, §2.6).
            from .h2server import serve_alpn_h2

            serve_alpn_h2(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._cancel_header_deadline()
        if self.tunnel_peer is not None:
            peer, self.tunnel_peer = self.tunnel_peer, None
            peer.tunnel_eof()
        current, self.current = self.current, None
        if current is not None and not current.response_done:
            current._client_gone()
        self.pending.clear()
        self.server._connection_closed()

    def data_received(self, data: bytes) -> None:
        if self.tunnel_peer is not None:
            self.tunnel_peer.tunnel_write(data)
            return
        failed = self._parse_error  # a local: the parser's callbacks may set the attribute below
        if failed is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            ex = self.parsing or (self.pending[-1] if self.pending else self.current)
            # A flag, not `self.tunnel_peer is None`: mypy narrowed that attribute to None above,
            # and compiled code would reject the _UpgradeBody that _upgrade_body may set.
            body_follows = False
            if ex is not None:
                ex.upgrade_leftover = bytes(data[offset:])
                if ex.content_length and not ex.chunked_request and ex.header(b"http2-settings") is None:
                    body_follows = self._upgrade_body(ex, ex.content_length)
            # Nothing more is HTTP on this connection until the handler decides.
            if not body_follows:
                self.block_read(_BLOCK_UPGRADE)
        except httptools.HttpParserError as exc:
            if (
                self._parse_error is None
                and self.parser.get_method() == b"PRI"
                # Only a `PRI ... HTTP/2.0` line (h2 then checks the rest of the preface): `PRI` with
                # garbage or another version is a broken HTTP/1.1 request (400, as in Go).
                and self.parser.get_http_version() == "2.0"
                and self.current is None
                and not self.pending
            ):
                # h2 hook (CONTRACT.md §2.3): llhttp pauses on the prior-knowledge preface
                # `PRI * HTTP/2.0`; from here the connection is HTTP/2. Being the parser's
                # error branch, it costs the HTTP/1.1 path nothing; h2 is imported only now.
                from .h2server import serve_prior_knowledge

                serve_prior_knowledge(self, data)
                return
            status, message = self._parse_error or (400, _parser_error_text(exc))
            self._fail_parse(status, message)
            # Requests parsed before the bad bytes are still answered, in order; the
            # error response follows them (exchange_done writes it).
        parsing = self.parsing
        if parsing is not None and not parsing.method and self._header_deadline is None and not self.closed:
            self._arm_header_deadline()
        if self.current is None and self.pending:
            self._dispatch_next()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone, as Go's server does.
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel_peer is not None:
            self.tunnel_peer.pause_producing()
        elif self.current is not None and self.current.producer is not None:
            self.current.producer.pause_producing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel_peer is not None:
            self.tunnel_peer.resume_producing()
        elif self.current is not None and self.current.producer is not None:
            self.current.producer.resume_producing()

    # ---- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Exchange(self)
        self.parsing.start_time = time.monotonic()
        self._header_bytes = 0
        self._hosts = 0

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.server.limits.max_header_bytes:
            self._parse_error = (431, "431 Request Header Fields Too Large")
            raise _HeaderTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        if ex.method:
            return  # trailer fields of a chunked request body: not forwarded
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.server.limits.max_header_bytes:
            self._parse_error = (431, "431 Request Header Fields Too Large")
            raise _HeaderTooLarge
        lname = name.lower()
        ex.headers.append((lname, name, value))
        if lname in self.server.watch:
            prior = ex.watched.get(lname)
            ex.watched[lname] = value if prior is None else prior + b", " + value
        if lname in _FRAMING:
            if lname == b"content-length":
                try:
                    ex.content_length = int(value)
                except ValueError:
                    ex.content_length = None
            elif lname == b"transfer-encoding":
                # Go's readTransfer (net/http transfer.go): one Transfer-Encoding line whose
                # value is exactly `chunked` (any case); anything else, `identity`, a list,
                # `chunked;q=1`, `"chunked"` or a second line included, is 501 "Unsupported
                # transfer encoding" before the handler runs. llhttp alone would take
                # `gzip, chunked` and answer 400 for the rest (RFC 9112 §6.1); Go's 501 is kept.
                if ex.chunked_request or value.strip(b" \t").lower() != b"chunked":
                    self._parse_error = (501, "Unsupported transfer encoding")
                    raise _BadRequest
                ex.chunked_request = True
            elif lname == b"host":
                # Go's server (readRequest): "too many Host headers" and a Host with a byte
                # httpguts.ValidHostHeader refuses are 400s.
                if self._hosts:
                    self._parse_error = (400, "400 Bad Request: too many Host headers")
                    raise _BadRequest
                self._hosts = 1
                if value != self._good_host:  # keep-alive requests repeat their Host
                    if value.translate(None, _HOST_BYTES):
                        self._parse_error = (400, "400 Bad Request: malformed Host header")
                        raise _BadRequest
                    self._good_host = value
            else:
                ex.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        parser = self.parser
        ex.method = parser.get_method()
        version = parser.get_http_version()
        if version != "1.1":  # Exchange.version defaults to b"1.1"
            if version != "1.0":
                # llhttp takes `HTTP/0.9` (and a request line without a version) and `HTTP/2.0`;
                # Go's http1ServerSupportsRequest answers 505 for every major version but 1
                # (Go answers 400 for a versionless line, which llhttp reports as 0.9 too).
                self._parse_error = (505, "505 HTTP Version Not Supported: unsupported protocol version")
                raise _BadRequest
            ex.version = b"1.0"
        elif not self._hosts and ex.method != b"CONNECT":
            # Go's server: an HTTP/1.1 request without Host is 400 (RFC 9112 §3.2).
            self._parse_error = (400, "400 Bad Request: missing required Host header")
            raise _BadRequest
        if ex.url[:1] != b"/":
            self._check_target(ex)
        ex.keep_alive = parser.should_keep_alive()
        ex.upgrade = parser.should_upgrade()
        ex.head_request = ex.method == b"HEAD"
        if self._header_deadline is not None:
            self._cancel_header_deadline()
        self.pending.append(ex)
        if self.current is not None or len(self.pending) > 1:
            self.block_read(_BLOCK_PIPELINE)

    def _check_target(self, ex: Exchange) -> None:
        """A request target that is not origin-form (RFC 9112 §3.2.2-3.2.4), normalised as
        Go's server and reverse proxy do. Rare, so kept off the common path."""
        url = ex.url
        if url == b"*":
            if ex.method != b"OPTIONS":
                # Go's ServeMux answers 400 to `*` with any method but OPTIONS.
                self._parse_error = (400, "400 Bad Request")
                raise _BadRequest
            return  # answered by the server itself (_dispatch_next), as Go does
        if ex.method == b"CONNECT":
            return  # authority-form: the handler decides
        parsed = origin_form(url)
        if parsed is None:
            # Go: url.ParseRequestURI fails ("invalid URI for request") → 400.
            self._parse_error = (400, "400 Bad Request")
            raise _BadRequest
        authority, target = parsed
        # Absolute-form: Go's server sets Request.Host from the URL (a Host line is ignored,
        # RFC 9112 §3.2.2) and drops userinfo; the reverse proxy writes the origin form and
        # forwards that Host unchanged (CONTRACT.md §2.6 "Host restoration").
        ex.url = target
        if authority:
            headers = ex.headers
            for i, (lname, name, _value) in enumerate(headers):
                if lname == b"host":
                    headers[i] = (lname, name, authority)
                    break
            else:
                headers.append((b"host", b"Host", authority))
            if b"host" in self.server.watch:
                ex.watched[b"host"] = authority

    def _upgrade_body(self, ex: Exchange, length: int) -> bool:
        """An upgrade request with a Content-Length body: llhttp hands the body over unparsed,
        with the bytes after it. Go's server reads it as the request body (the reverse proxy
        forwards it as a body, then switches protocols on a 101), so it is taken out of the
        tunnel data here; what does not fit in this read arrives through `_UpgradeBody` (then True)."""
        leftover = ex.upgrade_leftover
        body, ex.upgrade_leftover = leftover[:length], leftover[length:]
        ex.body_done = False
        if body:
            ex._on_body(body)
        if len(body) < length:
            self.tunnel_peer = _UpgradeBody(self, ex, length - len(body))
            return True
        ex.body_done = True
        return False

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex._on_body(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        if ex is not None:
            ex.body_done = True
            sink = ex._body_sink
            if sink is not None:
                sink.on_request_body_end()

    # ---- writing ------------------------------------------------------------

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush_out()
            self.closed = True
            self.transport.close()

    # ---- read flow control --------------------------------------------------

    def block_read(self, reason: int) -> None:
        if not self._read_block and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._read_block |= reason

    def unblock_read(self, reason: int) -> None:
        if not self._read_block & reason:
            return
        self._read_block &= ~reason
        if not self._read_block and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # ---- exchanges ----------------------------------------------------------

    def _dispatch_next(self) -> None:
        ex = self.pending.popleft()
        self.current = ex
        if self._read_block and len(self.pending) < self.server.limits.max_pipelined:
            self.unblock_read(_BLOCK_PIPELINE)
        if ex.upgrade and ex.header(b"http2-settings") is not None:
            # h2 hook: `Upgrade: h2c` (CONTRACT.md §2.3) is answered here, before the handler,
            # like Go's h2c.NewHandler; the request is served as HTTP/2 stream 1.
            from .h2server import serve_upgrade

            if serve_upgrade(self, ex):
                return
        if ex.url == b"*":
            # `OPTIONS *` (the only method _check_target lets through with `*`): Go's
            # serverHandler answers it itself (globalOptionsHandler), never the handler.
            ex.respond_text(200, b"")  # Content-Length: 0, no body
            return
        self.server.requests_started += 1
        try:
            self.server.handler(ex)
        except Exception:
            self.server.log_handler_error(ex)
            if not ex.response_started:
                ex.respond_error(500, "internal error")
            else:
                ex.abort()

    def exchange_done(self, ex: Exchange) -> None:
        if ex is not self.current:
            return
        self.current = None
        if not ex.keep_alive or not ex.body_done or self.server.closing or ex.upgrade:
            # An unread body (or an upgrade that was declined) leaves the stream
            # in an unknown state: close rather than parse body bytes as requests.
            if ex.body_done:
                self.close()
            else:
                self.linger_close()
            return
        if self.pending:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._dispatch_if_idle)
        elif self._parse_error is not None:
            self._write_parse_error()
        elif self._read_block and not self.closed:
            self.unblock_read(_BLOCK_PIPELINE)

    def _dispatch_if_idle(self) -> None:
        if self.current is None and self.pending and not self.closed:
            self._dispatch_next()
        elif self.current is None and self._parse_error is not None:
            self._write_parse_error()

    def start_tunnel(self, ex: Exchange, peer: TunnelPeer) -> None:
        self.tunnel_peer = peer
        self.current = ex
        leftover, ex.upgrade_leftover = ex.upgrade_leftover, b""
        if leftover:
            peer.tunnel_write(leftover)
        self._read_block = 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        if self.write_paused:
            peer.pause_producing()

    def take_over(self, peer: H2ServerConnection) -> None:
        """h2 hook: every later byte goes to `peer` (an HTTP/2 connection), through the tunnel
        slot that already routes reads, write-buffer pressure and connection loss."""
        self._cancel_header_deadline()
        self.parsing = None
        self.current = None
        self.pending.clear()
        self.tunnel_peer = peer
        self.h2 = peer
        self._read_block = 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def tunnel_write(self, data: bytes) -> None:
        self.write(data)

    def tunnel_eof(self) -> None:
        self.close()

    def pause_producing(self) -> None:
        self.block_read(_BLOCK_BODY)

    def resume_producing(self) -> None:
        self.unblock_read(_BLOCK_BODY)

    # ---- errors and timeouts ------------------------------------------------

    def _fail_parse(self, status: int, message: str) -> None:
        self._parse_error = (status, message)
        self._cancel_header_deadline()
        ex = self.parsing
        self.parsing = None
        current = self.current
        if current is not None and ex is current and not current.body_done:
            # The body of the request being answered is malformed: it cannot go on. Its
            # relay is cancelled too (the upstream connection closes mid-body, so the app
            # never sees a complete request) and its breaker slot is freed now, not when
            # the upstream gives up waiting for the rest of the body.
            cancel, current.on_abort = current.on_abort, None
            if not current.response_started:
                current.respond_error(400, "malformed request body")
            else:
                current.abort()
            if cancel is not None:
                cancel()
            return
        if ex is not None and self.pending and self.pending[-1] is ex:
            # Its head was parsed but it was not handed to the handler yet: llhttp reports
            # most framing errors right after the head, and a bad body in the same read
            # as its head fails before dispatch. It is never forwarded; the requests
            # before it are answered, then the error (exchange_done writes it).
            self.pending.pop()
        if current is None and not self.pending:
            self._write_parse_error()
        else:
            self.block_read(_BLOCK_PIPELINE)

    def _write_parse_error(self) -> None:
        assert self._parse_error is not None
        status, message = self._parse_error
        self.server.bad_requests += 1
        self.write(plain_response(status, message.encode(), close=True))
        self.linger_close()

    def linger_close(self, delay: float = _RST_AVOIDANCE_DELAY, abusive: bool = False) -> None:
        """Go's closeWriteAndWait, for a connection closed with request bytes unread (an
        error response, a body left unread): half-close, wait a moment, then close. Closing
        at once with unread bytes in our receive buffer sends a RST, which can destroy the
        response in the client's buffer before it reads it. Meanwhile the client's bytes are
        read and dropped, so a client still writing its request gets to read the answer; an
        `abusive` one (an HTTP/2 flooder) is not read at all, and is aborted at the end."""
        transport = self.transport
        if transport is None or self.closed or not transport.can_write_eof():
            self.close()
            return
        self.flush_out()
        transport.write_eof()
        self.closed = True  # nothing more is written or parsed
        self.tunnel_peer = _DISCARD  # data_received's first branch: no cost on the common path
        self._cancel_header_deadline()
        self._read_block = 0
        loop = asyncio.get_running_loop()
        if abusive:
            transport.pause_reading()
            loop.call_later(delay, transport.abort)
        else:
            transport.resume_reading()
            loop.call_later(delay, transport.close)

    def _arm_header_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_deadline = loop.call_later(self.server.limits.read_header_timeout, self._header_timeout)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timeout(self) -> None:
        self._header_deadline = None
        if self.parsing is not None and not self.parsing.method and self.current is None:
            self._parse_error = (408, "408 Request Timeout")
            self._write_parse_error()

    @property
    def idle(self) -> bool:
        return self.current is None and not self.pending and self.parsing is None


def _parser_error_text(exc: Exception) -> str:
    detail = str(exc).strip() or type(exc).__name__
    return f"400 Bad Request: {detail}"


class HttpServer:
    """Owns the listening sockets and the live connections of one handler."""

    def __init__(
        self,
        handler: Handler,
        watch: frozenset[bytes] = frozenset(),
        limits: ServerLimits | None = None,
        on_error: Callable[[HttpExchange], None] | None = None,
    ) -> None:
        self.handler = handler
        self.watch = watch
        self.limits = limits or ServerLimits()
        self.connections: set[ServerConnection] = set()
        self.servers: list[asyncio.Server] = []
        self.closing = False
        self.requests_started = 0
        self.bad_requests = 0
        self._on_error = on_error
        self._idle_waiters: list[asyncio.Future[None]] = []

    def protocol_factory(self) -> ServerConnection:
        return ServerConnection(self)

    async def listen(self, host: str | None, port: int, ssl: Any = None, backlog: int = 1024) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self.protocol_factory, host=host, port=port, ssl=ssl, backlog=backlog, reuse_address=True
        )
        self.servers.append(server)
        return server

    @property
    def ports(self) -> list[int]:
        out: list[int] = []
        for server in self.servers:
            # getattr: typeshed says a tuple, uvloop gives a list (compiled code checks the declared type).
            sockets: list[Any] = list(getattr(server, "sockets", None) or ())
            for sock in sockets:
                out.append(int(sock.getsockname()[1]))
        return out

    def log_handler_error(self, ex: HttpExchange) -> None:
        if self._on_error is not None:
            self._on_error(ex)

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Go's `Server.Shutdown`: stop accepting, close idle connections, let the
        busy ones finish their current response (then they close), no time limit
        unless given. Tunnelled (hijacked) connections are not waited for."""
        self.closing = True
        self.stop_accepting()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = False
            for conn in list(self.connections):
                if conn.tunnel_peer is not None:
                    if conn.h2 is not None:
                        # h2 hook: an HTTP/2 connection is no hijacked tunnel: GOAWAY, then
                        # its open streams finish like busy HTTP/1.1 connections (§2.11).
                        conn.h2.begin_shutdown()
                        busy = busy or not conn.h2.idle
                    continue
                if conn.idle:
                    conn.close()
                else:
                    busy = True
            if not busy:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._idle_waiters.append(fut)
            try:
                await asyncio.wait_for(fut, 0.05)
            except TimeoutError:
                pass

    def _connection_closed(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
