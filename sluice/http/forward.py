"""Relaying one exchange to an upstream: request head rewriting, body streaming
both ways with back-pressure, upgrades, and the mapping of upstream failures to
502 (CONTRACT.md §2.6). Shared by the queue-proxy and the activator; what each
adds or strips is passed in, so the rules here are only HTTP's own."""

from __future__ import annotations

import asyncio
import errno

import httptools

from ..native import mypyc_attr
from .client import DialError, Upstream, UpstreamClosed, UpstreamConnection, UpstreamPool, UpstreamSource
from .headers import HOP_BY_HOP, RelayedHead, connection_tokens
from .server import HttpExchange
from .wsframes import GOING_AWAY, FrameCursor, close_frame

__all__ = [
    "NOT_SENT_HEADER",
    "WEBSOCKET_CLOSE_GRACE",
    "Forwarder",
    "answer_timeout",
    "build_request_head",
    "go_error_text",
    "without_not_sent",
]

# Headers the forwarder writes itself (framing) or the caller re-adds.
_REBUILT = frozenset({b"host", b"content-length", b"x-forwarded-for"})

# On a 502 of a Sluice hop (queue-proxy, activator) whose request never reached any app (see
# `Forwarder.sent`): the hop in front of it (activator, ingress) may send the request to another
# backend. A stock Go hop never sets it, so behind one nothing is retried (Knative: no HTTP
# retries, CONTRACT.md §3.6).
NOT_SENT_HEADER = b"X-Sluice-Not-Sent"
_NOT_SENT_LINE = b"\nx-sluice-not-sent:"  # searched in "\n" + the lower-cased head
# Methods a keep-alive race may send twice (Go's net/http `isReplayable`, less the
# Idempotency-Key header rule).
_REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class _EditedHead:
    """A RelayedHead whose header block was edited (see `without_not_sent`)."""

    __slots__ = ("block", "content_length", "has_date", "upgrade_lines")

    def __init__(self, block: bytes, content_length: int | None, has_date: bool, upgrade_lines: bytes) -> None:
        self.block = block
        self.content_length = content_length
        self.has_date = has_date
        self.upgrade_lines = upgrade_lines


def without_not_sent(head: RelayedHead) -> RelayedHead:
    """`head` minus any NOT_SENT_HEADER line. For a hop whose upstream is an app (the
    queue-proxy): an app's own 502 must never claim the request reached no app, or an app
    that relays another service's Sluice 502 as is would have its request replayed
    elsewhere by the activator or the ingress. Called for 502s only, off the hot path."""
    block = head.block
    if _NOT_SENT_LINE not in b"\n" + block.lower():
        return head
    kept = [line for line in block.splitlines(keepends=True) if not line.lower().startswith(_NOT_SENT_LINE[1:])]
    return _EditedHead(b"".join(kept), head.content_length, head.has_date, head.upgrade_lines)


def build_request_head(
    ex: HttpExchange,
    host: bytes | None,
    drop: frozenset[bytes],
    extra: bytes = b"",
) -> bytes:
    """The upstream request head: the inbound headers minus hop-by-hop ones (and the
    ones the Connection header names), minus `drop`, plus Host, framing, the
    upgrade pair when tunnelling, and `extra` (pre-serialised lines)."""
    out = [ex.method, b" ", ex.url, b" HTTP/1.1\r\n"]
    hop = HOP_BY_HOP
    listed: set[bytes] | None = None
    te_trailers = False
    upgrade_value: bytes | None = None
    original_host = b""
    for lname, name, value in ex.headers:
        if lname in hop:
            if lname == b"connection":
                listed = (listed or set()) | connection_tokens(value)
            elif lname == b"te" and b"trailers" in value.lower():
                te_trailers = True
            elif lname == b"upgrade":
                upgrade_value = value
            continue
        if lname in _REBUILT or lname in drop:
            if lname == b"host":
                original_host = value
            continue
        out += (name, b": ", value, b"\r\n")
    if listed:
        # Rare path: rebuilt without the headers the client marked hop-by-hop.
        out = out[:4]
        for lname, name, value in ex.headers:
            if lname in hop or lname in _REBUILT or lname in drop or lname in listed:
                continue
            out += (name, b": ", value, b"\r\n")
    if host is None:
        host = original_host
    if host:
        out.append(b"Host: " + host + b"\r\n")
    if ex.chunked_request:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif ex.content_length is not None:
        out.append(b"Content-Length: %d\r\n" % ex.content_length)
    if te_trailers:
        out.append(b"Te: trailers\r\n")
    if ex.upgrade and upgrade_value is not None:
        out.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
    out.append(extra)
    out.append(b"\r\n")
    return b"".join(out)


def go_error_text(exc: BaseException) -> str:
    """What Go's reverse proxy would put in the 502 body for this failure."""
    if isinstance(exc, DialError):
        return str(exc)
    if isinstance(exc, UpstreamClosed):
        return "EOF"
    if isinstance(exc, ConnectionResetError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNRESET):
        return "read: connection reset by peer"
    if isinstance(exc, httptools.HttpParserError):
        return f"malformed HTTP response: {exc}"
    return str(exc) or type(exc).__name__


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the compiled group
class Forwarder:
    """Relays one exchange through an upstream connection.

    A handler's per-request object subclasses it (one object per request, not two)
    and overrides `finished()`, called exactly once when the relay is over for
    whatever reason (response ended, upstream failed, cancelled)."""

    __slots__ = (
        "_dial_task",
        "_finished",
        "_first_error",
        "_retried",
        "conn",
        "ex",
        "head",
        "pool",
        "sent",
        "upstream_error",
    )

    def __init__(self, ex: HttpExchange) -> None:
        self.ex = ex
        self.head = b""
        self.pool: UpstreamSource  # set by forward()
        self.conn: Upstream | None = None
        self.upstream_error: BaseException | None = None
        self._dial_task: asyncio.Task[None] | None = None
        self._finished = False
        self._retried = False
        self._first_error: BaseException | None = None
        # Whether any attempt handed a request byte to an upstream. While False, no app can
        # have seen the request, and no request body byte has been consumed either (the body
        # sink is set only with the first upstream, in `_attach`): the request may go to
        # another backend whole. Once True it never may: the bytes may have reached the app
        # (a reset after the write says nothing about whether the app read them), and a
        # streamed body cannot be replayed.
        self.sent = False

    def finished(self) -> None:
        """Hook: the relay is over. Called once, unless `abandon()` came first."""

    def retry_elsewhere(self) -> bool:
        """Hook: the request never reached an app (this hop's dial failed, or the next
        Sluice hop answered 502 with NOT_SENT_HEADER for a request without a body). A
        subclass that can reach another backend re-forwards (`forward()` again) and
        returns True; False answers the client with the 502 (marked not sent)."""
        return False

    def backend_failed(self) -> None:
        """Hook: the next hop's app is unreachable (its 502 says not sent), but this request
        cannot go elsewhere (its body is consumed): the 502 is relayed."""

    def forward(self, pool: UpstreamPool, head: bytes) -> None:
        """Sends `head` (see build_request_head) upstream, the request body after it."""
        self.head = head
        source: UpstreamSource = pool
        if self.ex.http2:
            # h2 hook: an HTTP/2 request goes upstream as h2c (CONTRACT.md §2.6, §3.7).
            source = pool.h2c_pool()
        self.pool = source
        conn = source.acquire_nowait()
        if conn is not None:
            self._attach(conn)
        else:
            self._dial_task = asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        try:
            conn = await self.pool.connect()
        except (OSError, DialError) as exc:
            self._dial_task = None
            self.on_upstream_error(exc)
            return
        self._dial_task = None
        if self._finished:
            self.pool.release(conn)
            return
        if conn.closed:
            # Fix (found by the h2 tests): the upstream closed the new connection before this
            # task resumed (connection_lost already ran, with no sink to tell), so the request
            # would wait for its timeout. Treat it as a close before any byte: retried once, then 502.
            self.conn = conn
            self.on_upstream_error(UpstreamClosed("EOF"))
            return
        self._attach(conn)

    def _attach(self, conn: Upstream) -> None:
        self.conn = conn
        self.sent = True
        ex = self.ex
        # An upgrade request's Content-Length body is a body (server.py _upgrade_body); a
        # chunked one is still left in the tunnel data.
        has_body = ex.has_body and not (ex.upgrade and ex.chunked_request)
        conn.begin(self, self.head, ex.head_request, has_body)
        ex.producer = conn
        if has_body:
            ex.set_body_sink(self)

    def cancel(self) -> None:
        """Stops relaying (client gone): the upstream request is cancelled by closing
        its connection, which therefore is not reused. Works before `forward()` too."""
        self._drop_upstream()
        self._over()

    def abandon(self) -> None:
        """`cancel()` without the `finished()` hook: the caller answers the client and
        completes the request itself (a timeout, see answer_timeout)."""
        self._finished = True
        self.ex.producer = None
        self._drop_upstream()

    def _drop_upstream(self) -> None:
        if self._dial_task is not None:
            self._dial_task.cancel()
            self._dial_task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            if conn.tunnel is not None:
                conn.tunnel_eof()
            else:
                conn.close()

    def _over(self) -> None:
        if not self._finished:
            self._finished = True
            self.ex.producer = None
            self.finished()

    # ---- BodySink: request body towards the upstream ------------------------

    def on_request_body(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        if self.ex.chunked_request:
            conn.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            conn.write(data)

    def on_request_body_end(self) -> None:
        conn = self.conn
        if conn is None:
            return
        if self.ex.chunked_request:
            conn.write(b"0\r\n\r\n")
        conn.end_body()

    def pause_request_body(self) -> None:
        self.ex.pause_body()

    def resume_request_body(self) -> None:
        self.ex.resume_body()

    # ---- ResponseSink: the response towards the client ----------------------

    def on_interim(self, status: int, head: RelayedHead) -> None:
        self.ex.write_interim(status, head.block)

    def on_response_head(self, status: int, reason: bytes, head: RelayedHead) -> None:
        self.ex.start_response(
            status,
            reason or b"",
            head.block,
            head.content_length,
            no_body=status in (204, 304),
            has_date=head.has_date,
        )

    def on_response(self, status: int, reason: bytes, head: RelayedHead, body: bytes) -> None:
        ex = self.ex
        self.conn = None
        if status == 502 and self._next_hop_not_sent(head):
            return
        # Nothing more to read upstream: a full client buffer has nothing left to pause.
        ex.producer = None
        ex.respond_whole(status, reason, head.block, head.content_length, body, status in (204, 304), head.has_date)
        self._over()

    def on_response_body(self, data: bytes) -> None:
        self.ex.write(data)

    def on_response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """h2 hook: trailers of an h2c upstream response (gRPC's grpc-status), sent with the
        HTTP/2 stream's END_STREAM by the following `ex.end()`."""
        self.ex.set_trailers(trailers)

    def on_read_done(self) -> None:
        # Whatever this read carried is relayed; a head with no body yet (a slow or
        # streaming response) must reach the client now, not with the first chunk.
        self.ex.flush()

    def on_response_end(self) -> None:
        self.conn = None
        self.ex.end()
        self._over()

    def on_upstream_error(self, exc: BaseException) -> None:
        conn, self.conn = self.conn, None
        if self._finished:
            return
        if (
            conn is not None
            and not self._retried
            and not conn.head_seen
            and conn.response_bytes == 0
            and not self.ex.has_body
            and self.ex.method in _REPLAYABLE
            and isinstance(exc, (UpstreamClosed, ConnectionResetError))
            and not self.ex.response_started
        ):
            # A pooled connection the app had already closed (keep-alive race): most likely
            # nothing was processed, but the bytes were written and the app may have read
            # them before it died, so only an idempotent request goes once more, as Go's
            # transport does (`isReplayable`); any other gets its 502.
            self._retried = True
            self._first_error = exc  # what the client hears if the second attempt fails too
            self._dial_task = asyncio.get_running_loop().create_task(self._dial())
            return
        ex = self.ex
        if not self.sent and not ex.response_started:
            # Nothing reached an app (the dial failed): another backend may take it whole.
            if self.retry_elsewhere():
                return
            self.upstream_error = exc
            _respond_not_sent(ex, go_error_text(exc))
        else:
            self.upstream_error = exc
            if not ex.response_started:
                # After a keep-alive retry, the first failure: the request may have reached
                # the app then, which a refused second dial must not hide.
                first = self._first_error
                ex.respond_error(502, go_error_text(first if first is not None else exc))
            else:
                ex.abort()
        self._over()

    def _next_hop_not_sent(self, head: RelayedHead) -> bool:
        """A whole 502 from a Sluice hop saying the request reached no app: retried
        elsewhere if the subclass can. Only a request without a body: this hop has already
        handed the next one whatever body there was, so it is consumed (whole responses
        only: an error 502 is small and Content-Length framed, so one read carries it)."""
        if _NOT_SENT_LINE not in b"\n" + head.block.lower():
            return False
        if self.ex.has_body:
            self.backend_failed()
            return False
        return self.retry_elsewhere()

    def on_upgrade(self, status: int, reason: bytes, head: RelayedHead, leftover: bytes) -> None:
        conn = self.conn
        ex = self.ex
        if conn is None:
            return
        assert isinstance(conn, UpstreamConnection)  # upgrades are HTTP/1.1's
        lines = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n", head.block, head.upgrade_lines, b"\r\n"]
        # Both sockets now carry raw bytes; the exchange finishes when either closes.
        if _is_websocket(ex):
            ws = _WebSocket(self, ex, conn)
            conn.tunnel = ws
            ex.upgrade_to_tunnel(b"".join(lines), _FromClient(ws))
            if leftover:
                ws.tunnel_write(leftover)
            return
        conn.tunnel = _TunnelEnd(self, ex)
        ex.upgrade_to_tunnel(b"".join(lines), conn)
        if leftover:
            ex.conn.write(leftover)

    def close_websocket(self, code: int = GOING_AWAY) -> bool:
        """Ends an upgraded websocket with Close frames to both sides (see `_WebSocket`);
        False if this exchange is no websocket tunnel (then nothing is done)."""
        conn = self.conn
        tunnel = conn.tunnel if conn is not None else None
        if not isinstance(tunnel, _WebSocket):
            return False
        self._finished = True  # the caller completes the request (as with abandon())
        self.ex.producer = None
        tunnel.close(code)
        return True

    def end_long_lived(self, text: bytes) -> None:
        """The data plane is going away (the drain's deadline, CONTRACT.md §2.11): ends this
        exchange as cleanly as its protocol allows, without the `finished()` hook. A websocket
        gets Close frames (1001); a started response of unknown length (a server-sent event
        stream) ends with its proper terminator (the last chunk); one not started yet gets 504
        `text` as from the timeout handler; anything else is cut."""
        if self.close_websocket(GOING_AWAY):
            return
        ex = self.ex
        self.abandon()
        if not ex.response_started:
            ex.respond_text(504, text)
        else:
            # Chunked: the last chunk; until-close: the close; Content-Length: cut short.
            ex.terminate_with(b"")

    def tunnel_closed(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        self._over()


class _TunnelEnd:
    """Upstream side of an upgraded exchange, writing into the client's socket."""

    __slots__ = ("ex", "forwarder")

    def __init__(self, forwarder: Forwarder, ex: HttpExchange) -> None:
        self.forwarder = forwarder
        self.ex = ex

    def tunnel_write(self, data: bytes) -> None:
        self.ex.conn.write(data)

    def tunnel_eof(self) -> None:
        self.ex.conn.close()
        self.forwarder.tunnel_closed()

    def pause_producing(self) -> None:
        self.ex.conn.block_read(2)

    def resume_producing(self) -> None:
        self.ex.conn.unblock_read(2)


def _is_websocket(ex: HttpExchange) -> bool:
    value = ex.header(b"upgrade")
    return value is not None and value.strip().lower() == b"websocket"


# After Close frames went out, how long the peers get to answer and close before the
# sockets are closed anyway.
WEBSOCKET_CLOSE_GRACE = 1.0


class _WebSocket:
    """An upgraded websocket: the upstream connection's tunnel end (bytes from the app to the
    client) that also takes the client's bytes (through `_FromClient`), following the frames
    both ways, so that `close()` can put a Close frame between two frames of each direction
    (RFC 6455 §5.5.1) instead of cutting TCP connections mid-message. The 101 and what
    follows are the app's: nothing is parsed beyond frame lengths, nothing is changed
    until a close."""

    __slots__ = ("code", "conn", "down", "down_closed", "ex", "forwarder", "timer", "up", "up_closed")

    def __init__(self, forwarder: Forwarder, ex: HttpExchange, conn: UpstreamConnection) -> None:
        self.forwarder = forwarder
        self.ex = ex
        self.conn = conn
        self.down = FrameCursor()  # app -> client
        self.up = FrameCursor()  # client -> app
        self.code = 0  # set once closing
        self.down_closed = False  # our Close frame went to the client
        self.up_closed = False  # ... and to the app
        self.timer: asyncio.TimerHandle | None = None

    # ---- app -> client (the upstream connection's tunnel) ----

    def tunnel_write(self, data: bytes) -> None:
        if not self.code:
            self.down.feed(data)
            self.ex.conn.write(data)
        elif not self.down_closed:
            at = self.down.feed(data, stop_at_boundary=True)
            if at >= 0:
                self._close_down(data[:at])
            else:
                self.ex.conn.write(data)
        # else: after our Close, the app's frames (its own Close answer) go nowhere

    def tunnel_eof(self) -> None:
        if self.code and self.down_closed:
            return  # the app answered our Close and left: the client still gets its time
        self._close_sockets()

    def pause_producing(self) -> None:
        self.ex.conn.block_read(2)

    def resume_producing(self) -> None:
        self.ex.conn.unblock_read(2)

    # ---- client -> app ----

    def from_client(self, data: bytes) -> None:
        if not self.code:
            self.up.feed(data)
            self.conn.write(data)
        elif not self.up_closed:
            at = self.up.feed(data, stop_at_boundary=True)
            if at >= 0:
                self._close_up(data[:at])
            else:
                self.conn.write(data)

    # ---- closing ----

    def close(self, code: int) -> None:
        if self.code:
            return
        self.code = code
        if self.down.at_boundary:
            self._close_down(b"")
        if self.up.at_boundary:
            self._close_up(b"")
        self.timer = asyncio.get_running_loop().call_later(WEBSOCKET_CLOSE_GRACE, self._close_sockets)

    def _close_down(self, rest: bytes) -> None:
        self.down_closed = True
        self.ex.conn.write(rest + close_frame(self.code, masked=False))

    def _close_up(self, rest: bytes) -> None:
        self.up_closed = True
        if not self.conn.closed:
            self.conn.write(rest + close_frame(self.code, masked=True))

    def _close_sockets(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ex.conn.close()
        self.forwarder.tunnel_closed()


class _FromClient:
    """The client connection's tunnel peer for a `_WebSocket` (bytes from the client)."""

    __slots__ = ("ws",)

    def __init__(self, ws: _WebSocket) -> None:
        self.ws = ws

    def tunnel_write(self, data: bytes) -> None:
        self.ws.from_client(data)

    def tunnel_eof(self) -> None:
        ws = self.ws
        if ws.timer is not None:
            ws.timer.cancel()
            ws.timer = None
        ws.conn.tunnel_eof()

    def pause_producing(self) -> None:
        self.ws.conn.pause_producing()

    def resume_producing(self) -> None:
        self.ws.conn.resume_producing()


def _respond_not_sent(ex: HttpExchange, text: str) -> None:
    """Go's `http.Error` 502 (CONTRACT.md §2.6) plus NOT_SENT_HEADER."""
    ex.respond_text(
        502,
        text.encode() + b"\n",
        extra=((b"X-Content-Type-Options", b"nosniff"), (NOT_SENT_HEADER, b"true")),
        content_type=b"text/plain; charset=utf-8",
    )


def answer_timeout(ex: HttpExchange, forwarder: Forwarder, text: bytes) -> None:
    """Knative's timeout handler firing (CONTRACT.md §2.8): the upstream request is
    cancelled without its own completion hook, then the client gets 504 `text`,
    or, if the response already started, `text` appended and the response ended."""
    if forwarder.close_websocket(GOING_AWAY):
        return  # a websocket past its total timeout: Close frames, not a cut connection
    forwarder.abandon()
    if ex.response_started:
        ex.terminate_with(text)
    else:
        ex.respond_text(504, text)
