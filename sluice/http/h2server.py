"""HTTP/2 over cleartext (h2c) on the serving ports, beside HTTP/1.1 (CONTRACT.md §2.3, §3.2).

A `ServerConnection` hands its socket to an `H2ServerConnection` when the first request on it
is the prior-knowledge preface (`PRI * HTTP/2.0`, which llhttp reports as a pause) or when a
request asks for `Upgrade: h2c` (answered with 101; the request becomes stream 1). The
ServerConnection stays the asyncio Protocol and forwards every byte here through its tunnel
slot, so its write-buffer callbacks and `connection_lost` reach us unchanged.

Each stream is an `H2Stream`, which offers the request/response surface of an `Exchange`, so
the queue-proxy's and the activator's handlers, the breaker, the stats, the timeouts and the
`Forwarder` serve it unchanged; the Forwarder sends it upstream as h2c (§2.6 "upstream
protocol mirrors downstream"; see h2client.py) and relays the response trailers (gRPC).

The protocol itself (frames, stream states, windows, HPACK) is h2conn.H2Core, compiled; this
module is the glue between it and the Exchange surface. server.py imports it only when an
HTTP/2 connection appears, so the HTTP/1.1 path never loads it.

Flow control, per stream (RFC 9113 §5.2):
- request body: DATA is acknowledged (WINDOW_UPDATE) only once the body sink took it; while
  the sink is paused or not attached yet (breaker queue) the data is kept and not
  acknowledged, so the client stops at its window (1 MiB, Go's default per stream);
- response body: DATA leaves as the client's windows allow; what does not fit is kept and
  the stream's producer (the upstream) is paused until a WINDOW_UPDATE makes room. A full
  socket buffer pauses every stream's producer.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .h2conn import (
    ENHANCE_YOUR_CALM,
    INITIAL_WINDOW_SIZE,
    INTERNAL_ERROR,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2ConnectionError,
    H2Core,
    H2Error,
    goaway_frame,
)
from .h2conn import (
    MAX_CONCURRENT_STREAMS as SETTINGS_MAX_CONCURRENT_STREAMS,
)
from .h2conn import (
    MAX_HEADER_LIST_SIZE as SETTINGS_MAX_HEADER_LIST_SIZE,
)
from .h2hpack import memo_put
from .h2limits import (
    CONTROL_BURST,
    CONTROL_RATE,
    READ_PAUSE_BYTES,
    READ_SLICE,
    READ_SLICE_TIME,
    RESET_BURST,
    RESET_RATE,
    Budget,
)
from .headers import HOP_BY_HOP, Header, http_date

if TYPE_CHECKING:
    from .server import BodySink, Exchange, HttpExchange, Producer, ServerConnection, TunnelPeer

__all__ = [
    "H2ServerConnection",
    "H2Stream",
    "parse_header_block",
    "serve_alpn_h2",
    "serve_prior_knowledge",
    "serve_upgrade",
]

log = logging.getLogger("sluice.http")

PREFACE_REQUEST = PREFACE[:18]  # the part shaped like an HTTP/1.x request line

# Go's http2.Server defaults: 250 concurrent streams, 1 MiB receive window per stream.
MAX_CONCURRENT_STREAMS = 250
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
MAX_HEADER_LIST_SIZE = 1 << 20  # Go's DefaultMaxHeaderBytes, as for HTTP/1.1
# Go's http2 server closes a connection whose client preface does not arrive in 10 s.
PREFACE_TIMEOUT = 10.0
# Response bytes kept per stream beyond the client's window before the producer is paused.
_OUT_HIGH_WATER = 64 * 1024
# Reasons this connection stops reading its socket (ServerConnection.block_read bits).
_BLOCK_SLICE = 8  # received bytes still being processed in slices (h2limits.READ_SLICE)
_BLOCK_OUTPUT = 16  # more than READ_PAUSE_BYTES of output waits in the socket buffer
# After GOAWAY(ENHANCE_YOUR_CALM) a client that does not read is cut off after this long.
_ABUSE_LINGER = 5.0

# Never valid in an HTTP/2 field section (RFC 9113 §8.2.2); removed from relayed headers.
_CONNECTION_SPECIFIC = HOP_BY_HOP | {b"host", b"http2-settings"}
# Written by `_send_complete` itself.
_REBUILT_FIELDS = frozenset({b"content-length", b"date"})


def parse_header_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """`Name: value\\r\\n` lines (what handlers and the Forwarder pass to `start_response`)
    as HTTP/2 fields: lower-cased names, connection-specific fields dropped."""
    cached = _block_cache.get(block)
    if cached is not None:
        return cached
    out: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\r\n"):
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        if name in _CONNECTION_SPECIFIC:
            continue
        out.append((name, line[colon + 1 :].strip()))
    # Upstream response heads repeat (gRPC: the same content-type line every time).
    memo_put(_block_cache, block, out, 512, 256)
    return out


_block_cache: dict[bytes, list[tuple[bytes, bytes]]] = {}


# Advertised in our SETTINGS. The stream cap is enforced by `_on_request` as a stream error
# (REFUSED_STREAM, RFC 9113 §5.1.2), whether or not the client has acknowledged the SETTINGS.
_SETTINGS = {
    SETTINGS_MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
    INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
}


def serve_prior_knowledge(sc: ServerConnection, data: bytes) -> None:
    """The first request on `sc` is the h2 preface: llhttp paused (or, for a malformed one,
    failed) in `data`. Everything after the preface is HTTP/2; H2Core checks the preface itself."""
    conn = H2ServerConnection(sc)
    sc.take_over(conn)
    conn.core.initiate()
    conn.flush()
    conn.tunnel_write(_from_preface(data))


def serve_alpn_h2(sc: ServerConnection) -> None:
    """A TLS connection that negotiated `h2` by ALPN: HTTP/2 from its first byte."""
    conn = H2ServerConnection(sc)
    sc.take_over(conn)
    conn.core.initiate()
    conn.flush()


def _from_preface(data: bytes) -> bytes:
    """The connection's bytes from the preface on, rebuilt from the chunk llhttp stopped in.

    llhttp pauses once the whole 24-byte preface is in (it checks the `SM` part too), so
    this chunk holds the preface, or its tail when earlier reads brought the start."""
    at = data.find(PREFACE)
    if at >= 0:
        return data[at:]
    for cut in range(min(len(PREFACE) - 1, len(data)), 0, -1):
        if PREFACE.endswith(data[:cut]):
            return PREFACE + data[cut:]
    # llhttp rejected what followed `PRI * HTTP/2.0`: a malformed preface, which H2Core answers
    # with GOAWAY(PROTOCOL_ERROR).
    at = data.find(PREFACE_REQUEST)
    return PREFACE_REQUEST + (data[at + len(PREFACE_REQUEST) :] if at >= 0 else data)


def serve_upgrade(sc: ServerConnection, ex: Exchange) -> bool:
    """`Upgrade: h2c` with `HTTP2-Settings` (RFC 7540 §3.2, Go's h2c handler): answers 101 and
    serves the request as stream 1. False when it is not an h2c upgrade it can take; the
    request then goes on like any other upgrade request."""
    upgrade = ex.header(b"upgrade") or b""
    settings = ex.header(b"http2-settings")
    if settings is None or b"h2c" not in {t.strip().lower() for t in upgrade.split(b",")}:
        return False
    if ex.chunked_request:
        return False  # Go de-chunks and buffers it; rare enough to leave to the app
    conn = H2ServerConnection(sc)
    try:
        conn.core.initiate_upgrade(settings)
    except (H2Error, binascii.Error, ValueError):
        return False
    sc.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    # llhttp hands an upgrade request's body over with the bytes after it, unparsed: the
    # first Content-Length bytes are stream 1's body, HTTP/2 follows.
    leftover, ex.upgrade_leftover = ex.upgrade_leftover, b""
    sc.take_over(conn)
    conn.flush()
    headers = [(lname, name, value) for lname, name, value in ex.headers if lname not in _CONNECTION_SPECIFIC]
    host = ex.header(b"host")
    if host is not None:
        headers.insert(0, (b"host", b"Host", host))
    length = ex.content_length or 0
    stream = conn.open_stream(1, ex.method, ex.url, headers, has_body=length > 0)
    stream.upgraded = True
    conn.last_stream_id = 1
    conn.upgrade_body_left = length
    conn.dispatch(stream)
    if leftover:
        conn.tunnel_write(leftover)
    return True


class H2ServerConnection:
    """One HTTP/2 connection: the protocol core (H2Core), its streams, and the socket's writes.
    The core reports frames through the `h2_*` methods (h2conn.H2Events)."""

    def __init__(self, sc: ServerConnection) -> None:
        self.sc = sc
        self.server = sc.server
        self.client_ip = sc.client_ip
        self.xff_line = sc.xff_line
        self.transport = sc.transport
        self.core = H2Core(self, client=False, settings=_SETTINGS, connection_window=CONNECTION_WINDOW)
        self.streams: dict[int, H2Stream] = {}
        self.last_stream_id = 0
        self.write_paused = False
        self.goaway_sent = False
        self.closed = False
        self.upgrade_body_left = 0  # bytes of an `Upgrade: h2c` request body still to come
        self._flush_handle: asyncio.Handle | None = None
        # Abuse budgets (h2limits): cancelled or refused streams, and frames we must ACK.
        self._resets = Budget(RESET_BURST, RESET_RATE)
        self._controls = Budget(CONTROL_BURST, CONTROL_RATE)
        self._backlog: deque[bytes] = deque()  # received bytes waiting for their slice
        self._slice_handle: asyncio.Handle | None = None
        loop = asyncio.get_running_loop()
        self._preface_timer: asyncio.TimerHandle | None = loop.call_later(PREFACE_TIMEOUT, self._preface_timeout)

    # ---- bytes in (the ServerConnection's tunnel slot) ----------------------

    def tunnel_write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.upgrade_body_left:
            data = self._upgrade_body(data)
            if not data:
                return
        if len(data) <= READ_SLICE and not self._backlog:
            self._receive(data)
            return
        # A big read is handed to the core in slices, for at most READ_SLICE_TIME per loop iteration
        # (reading paused meanwhile): a read full of tiny frames cannot hold the event loop
        # from other connections; a read of big DATA frames still goes through at once.
        self._backlog.extend(data[at : at + READ_SLICE] for at in range(0, len(data), READ_SLICE))
        if self._slice_handle is None:
            self._next_slice()

    def _next_slice(self) -> None:
        self._slice_handle = None
        backlog = self._backlog
        deadline = time.monotonic() + READ_SLICE_TIME
        while backlog and not self.closed:
            self._receive(backlog.popleft())
            if time.monotonic() >= deadline:
                break
        if self.closed:
            backlog.clear()
        elif backlog:
            self.sc.block_read(_BLOCK_SLICE)
            self._slice_handle = asyncio.get_running_loop().call_soon(self._next_slice)
        else:
            self.sc.unblock_read(_BLOCK_SLICE)

    def _receive(self, data: bytes) -> None:
        try:
            self.core.receive(data)  # reports each frame to the h2_* methods below
        except H2ConnectionError as exc:
            if exc.error_code == ENHANCE_YOUR_CALM:
                # A header block of more than 64 CONTINUATION frames (the 2024 CONTINUATION
                # flood): abuse, not a mistake.
                self._enhance_your_calm(str(exc))
            else:
                self._connection_error(exc.error_code, str(exc))
            return
        if not self.closed:
            self.flush()

    # ---- frames, as H2Core reports them (h2conn.H2Events) -------------------

    def h2_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], kind: int, end_stream: bool) -> None:
        if kind == 0:
            if not self._on_request(stream_id, fields, end_stream):
                self._enhance_your_calm("too many streams refused")
            return
        # Request trailers end the body; like HTTP/1.1's, they are not relayed upstream.
        if end_stream:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream._on_end()

    def h2_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            # A stream we finished (or reset) while the client was still sending: keep the
            # connection window open.
            self.ack(flow_len, stream_id)
            return
        stream._on_data(data, flow_len)
        if end_stream:
            stream._on_end()

    def h2_reset(self, stream_id: int, error_code: int) -> None:
        if not self._on_reset(stream_id):
            self._enhance_your_calm("too many streams cancelled (rapid reset)")

    def h2_window(self, stream_id: int) -> None:
        self._on_window(stream_id)

    def h2_settings(self) -> None:
        if not self._controls.spend():
            self._enhance_your_calm("too many SETTINGS frames")
            return
        self._on_settings()

    def h2_ping(self) -> None:
        # The core queues the ACK; a flood of them is bounded here and by READ_PAUSE_BYTES
        # (Go: maxQueuedControlFrames).
        if not self._controls.spend():
            self._enhance_your_calm("too many PING frames")

    def h2_goaway(self, last_stream_id: int, error_code: int) -> None:
        # The client sends no more streams; the open ones finish, then we close.
        self.goaway_sent = True
        if not self.streams:
            self.flush()
            self.close()
            self.core.closed = True

    def _upgrade_body(self, data: bytes) -> bytes:
        """The HTTP/1.1 body of an `Upgrade: h2c` request, which precedes the HTTP/2 bytes."""
        take = data[: self.upgrade_body_left]
        self.upgrade_body_left -= len(take)
        stream = self.streams.get(1)
        if stream is not None:
            stream._on_data(take, 0)
            if not self.upgrade_body_left:
                stream._on_end()
        self.flush()
        return data[len(take) :]

    def tunnel_eof(self) -> None:
        """The socket closed: every open stream's client is gone."""
        self.closed = True
        self.core.closed = True  # no more frames reported, even mid-read
        self._backlog.clear()
        if self._slice_handle is not None:
            self._slice_handle.cancel()
            self._slice_handle = None
        self._cancel_preface_timer()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if not stream.response_done:
                stream._client_gone()

    def pause_producing(self) -> None:
        """The socket's write buffer is full: pause every stream's producer."""
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream._update_producer()

    def resume_producing(self) -> None:
        self.write_paused = False
        self.sc.unblock_read(_BLOCK_OUTPUT)
        for stream in list(self.streams.values()):
            stream._update_producer()

    # ---- events -------------------------------------------------------------

    def _on_request(self, sid: int, fields: list[tuple[bytes, bytes]], end_stream: bool) -> bool:
        """Opens and dispatches the stream; False when the client is over its reset budget."""
        if self.goaway_sent and sid > self.last_stream_id:
            # Opened after our GOAWAY crossed it: never processed, safe for the client to retry.
            self._reset(sid, REFUSED_STREAM)
            return True
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            # Our SETTINGS_MAX_CONCURRENT_STREAMS, enforced here as a stream error (RFC 9113
            # §5.1.2), not a connection error that would kill every stream. Refused streams
            # were never processed (§8.7), so the client may retry them; they count against
            # the reset budget.
            self._reset(sid, REFUSED_STREAM)
            return self._resets.spend()
        self.last_stream_id = sid
        method = url = authority = b""
        headers: list[Header] = []
        host_header: bytes | None = None
        for name_b, value_b in fields:
            if name_b[:1] == b":":
                if name_b == b":method":
                    method = value_b
                elif name_b == b":path":
                    url = value_b
                elif name_b == b":authority":
                    authority = value_b
                continue
            if name_b == b"host":
                host_header = value_b
                continue
            headers.append((name_b, name_b, value_b))
        # Go sets Request.Host from :authority (else a Host field); build_request_head and the
        # handlers read it as the `host` header, as for HTTP/1.1.
        host = authority or host_header
        if host is not None:
            headers.insert(0, (b"host", b"host", host))
        if method == b"CONNECT" and not url:
            url = authority
        stream = self.open_stream(sid, method, url, headers, has_body=not end_stream)
        self.dispatch(stream)
        return True

    def open_stream(self, sid: int, method: bytes, url: bytes, headers: list[Header], has_body: bool) -> H2Stream:
        stream = H2Stream(self, sid, method, url, headers, has_body)
        watch = self.server.watch
        watched = stream.watched
        for lname, _name, value in headers:
            if lname in watch:
                prior = watched.get(lname)
                watched[lname] = value if prior is None else prior + b", " + value
            elif lname == b"content-length":
                try:
                    stream.content_length = int(value)
                except ValueError:
                    stream.content_length = None
        if b"content-length" in watched:
            try:
                stream.content_length = int(watched[b"content-length"])
            except ValueError:
                stream.content_length = None
        self.streams[sid] = stream
        return stream

    def dispatch(self, stream: H2Stream) -> None:
        server = self.server
        server.requests_started += 1
        ex: HttpExchange = stream  # the Exchange surface, checked structurally
        try:
            server.handler(ex)
        except Exception:
            server.log_handler_error(ex)
            if not stream.response_started:
                stream.respond_error(500, "internal error")
            else:
                stream.abort()

    def _on_data(self, sid: int, data: bytes, flow_len: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            # A stream we finished (or reset) while the client was still sending: keep the
            # connection window open.
            self.ack(flow_len, sid)
            return
        stream._on_data(data, flow_len)

    def _on_window(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None:
                stream._pump()
            return
        for stream in list(self.streams.values()):
            if stream.out:
                stream._pump()

    def _on_reset(self, sid: int) -> bool:
        """RST_STREAM from the client: its request is cancelled now (the breaker slot is freed
        by the handler's on_abort, CONTRACT.md §2.6 "a client-cancelled request writes
        nothing"). False when the client cancels streams faster than the reset budget allows
        (CVE-2023-44487: each HEADERS+RST_STREAM pair costs us a dispatch, it costs the
        client nothing)."""
        stream = self.streams.pop(sid, None)
        within = True
        if stream is not None:
            stream.closed = True
            if not stream.response_done:
                within = self._resets.spend()
                stream._client_gone()
        self._maybe_close()
        return within

    def _on_settings(self) -> None:
        self._cancel_preface_timer()
        # A changed SETTINGS_INITIAL_WINDOW_SIZE can open every stream's window.
        for stream in list(self.streams.values()):
            if stream.out:
                stream._pump()

    # ---- bytes out ----------------------------------------------------------

    def flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        data = self.core.data_to_send()
        if data:
            self.sc.write(data)
            transport = self.transport
            if transport is not None and transport.get_write_buffer_size() > READ_PAUSE_BYTES:
                # The client is not reading what we send (ACKs, responses): stop reading
                # what it sends until the buffer drains (resume_producing), so the frames
                # that make us write cannot grow our memory without bound.
                self.sc.block_read(_BLOCK_OUTPUT)

    def schedule_flush(self) -> None:
        """Writes what h2 has queued at the end of this loop iteration: the frames several
        streams produce in one upstream read leave in one write."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        if not self.closed:
            self.flush()

    def ack(self, flow_len: int, sid: int) -> None:
        if flow_len <= 0 or self.closed:
            return
        # The core still credits the connection window when the stream is already closed.
        self.core.ack(flow_len, sid)

    def _reset(self, sid: int, code: int) -> None:
        self.core.reset_stream(sid, code)
        self.schedule_flush()

    def stream_finished(self, stream: H2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.goaway_sent and not self.streams and not self.closed:
            self.flush()
            self.close()

    # ---- shutdown and errors ------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.streams

    def begin_shutdown(self) -> None:
        """Graceful GOAWAY (NO_ERROR, last stream = the newest one we accepted), the HTTP/2 side
        of Go's `Server.Shutdown` (CONTRACT.md §2.11): the open streams run to completion, new
        ones are refused, and the connection closes once none is left.

        The streams still running go on sending their frames."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.flush()
        self.sc.write(goaway_frame(self.last_stream_id, NO_ERROR))
        self._maybe_close()

    def _connection_error(self, code: int, detail: str) -> None:
        """A connection error (RFC 9113 §5.4.1): GOAWAY with its code, then close. Malformed
        prefaces and frames end here, never in a hang."""
        log.debug("h2 connection error %s: %s", code, detail)
        self.core.goaway(code, self.last_stream_id)
        self.sc.write(self.core.data_to_send())
        self.close()
        self.tunnel_eof()

    def _enhance_your_calm(self, detail: str) -> None:
        """A client over one of its abuse budgets (h2limits): GOAWAY(ENHANCE_YOUR_CALM) with
        the last stream we processed, then a lingering close: nothing more is read from it,
        and it is cut off after _ABUSE_LINGER (closing at once, with its frames unread,
        would send a RST that can destroy the GOAWAY before the client reads it)."""
        log.warning(
            "h2 connection closed: over its abuse budget",
            extra={"fields": {"reason": detail, "client": self.client_ip.decode("latin-1")}},
        )
        self.goaway_sent = True
        self.flush()
        self.sc.write(goaway_frame(self.last_stream_id, ENHANCE_YOUR_CALM))
        self.tunnel_eof()
        self.sc.linger_close(_ABUSE_LINGER, abusive=True)

    def _preface_timeout(self) -> None:
        self._preface_timer = None
        if not self.closed:
            self._connection_error(PROTOCOL_ERROR, "client preface timeout")

    def _cancel_preface_timer(self) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
            self._preface_timer = None

    def close(self) -> None:
        self.sc.close()

    # ServerConnection-like surface used by handlers through `ex.conn`.
    def write(self, data: bytes) -> None:
        self.sc.write(data)

    def block_read(self, reason: int) -> None:
        return None

    def unblock_read(self, reason: int) -> None:
        return None


class H2Stream:
    """One HTTP/2 request and its response: the `Exchange` surface over a stream."""

    http2 = True
    # Fixed for every stream: HTTP/2 has no keep-alive, chunking or upgrades per request.
    keep_alive = True
    upgrade = False
    upgrade_leftover = b""
    chunked_request = False
    expect_continue = False
    version = b"2.0"
    response_mode = 1

    __slots__ = (
        "_body_end_sent",
        "_body_paused",
        "_body_sink",
        "_end_pending",
        "_head",
        "_no_body",
        "_out_bytes",
        "_producer_paused",
        "_trailers",
        "aborted",
        "body_bytes",
        "body_chunks",
        "body_done",
        "closed",
        "conn",
        "content_length",
        "has_body",
        "head_request",
        "headers",
        "last_write",
        "method",
        "on_abort",
        "out",
        "producer",
        "response_done",
        "response_started",
        "start_time",
        "status",
        "stream_id",
        "upgraded",
        "url",
        "watched",
    )

    def __init__(
        self, conn: H2ServerConnection, stream_id: int, method: bytes, url: bytes, headers: list[Header], has_body: bool
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self.url = url
        self.headers = headers
        self.watched: dict[bytes, bytes] = {}
        self.has_body = has_body
        self.body_done = not has_body
        self.content_length: int | None = None
        self.head_request = method == b"HEAD"
        self.upgraded = False
        self.body_chunks: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled length)
        self._body_sink: BodySink | None = None
        self._body_paused = False
        self._body_end_sent = False
        self.response_started = False
        self.response_done = False
        self.status = 0
        self.body_bytes = 0
        self.producer: Producer | None = None
        self.on_abort: Callable[[], None] | None = None
        self.aborted = False
        self.closed = False
        self.last_write = 0.0
        self.start_time = time.monotonic()
        self._head: list[tuple[bytes, bytes]] | None = None  # response head not sent yet
        self._no_body = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self.out: deque[bytes] = deque()  # response DATA waiting for window
        self._out_bytes = 0
        self._end_pending = False
        self._producer_paused = False

    # ---- request side -------------------------------------------------------

    @property
    def client_ip(self) -> bytes:
        return self.conn.client_ip

    def header(self, lname: bytes) -> bytes | None:
        for name, _raw, value in self.headers:
            if name == lname:
                return value
        return None

    def set_body_sink(self, sink: BodySink) -> None:
        self._body_sink = sink
        self._deliver_body()

    def pause_body(self) -> None:
        self._body_paused = True

    def resume_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            self._deliver_body()
            self.conn.schedule_flush()

    def _deliver_body(self) -> None:
        sink = self._body_sink
        if sink is None:
            return
        chunks = self.body_chunks
        conn = self.conn
        while chunks and not self._body_paused:
            data, flow_len = chunks.popleft()
            sink.on_request_body(data)
            conn.ack(flow_len, self.stream_id)
        if not chunks and self.body_done and not self._body_end_sent:
            self._body_end_sent = True
            sink.on_request_body_end()

    def _on_data(self, data: bytes, flow_len: int) -> None:
        sink = self._body_sink
        if sink is not None and not self._body_paused and not self.body_chunks:
            if data:
                sink.on_request_body(data)
            self.conn.ack(flow_len, self.stream_id)
            return
        # Not acknowledged until taken: the client's window bounds what is kept here.
        self.body_chunks.append((data, flow_len))

    def _on_end(self) -> None:
        self.body_done = True
        self._deliver_body()

    # ---- response side ------------------------------------------------------

    def respond(self, data: bytes, close: bool = False) -> None:
        """A complete HTTP/1.1-serialised response (headers.plain_response), sent as HTTP/2."""
        if self.response_started or self.aborted:
            return
        head, _, body = data.partition(b"\r\n\r\n")
        line, _, block = head.partition(b"\r\n")
        parts = line.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 500
        fields = [(n, v) for n, v in parse_header_block(block + b"\r\n") if n not in _REBUILT_FIELDS]
        self._send_complete(status, fields, body)

    def respond_error(self, status: int, message: str) -> None:
        """Go's `http.Error` shape (text/plain, nosniff, message + newline)."""
        self._send_complete(
            status,
            [(b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff")],
            message.encode() + b"\n",
        )

    def respond_text(
        self, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = (), content_type: bytes | None = None
    ) -> None:
        ctype = content_type if content_type is not None else (b"text/plain; charset=utf-8" if body else None)
        fields = [(b"content-type", ctype)] if ctype is not None else []
        fields += [(name.lower(), value) for name, value in extra]
        self._send_complete(status, fields, body)

    def _send_complete(self, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.response_started or self.aborted:
            return
        self.response_started = True
        self.status = status
        self.last_write = time.monotonic()
        head = [(b":status", b"%d" % status), *fields, (b"date", http_date()), (b"content-length", b"%d" % len(body))]
        self._head = head
        if body and not self.head_request:
            self.body_bytes += len(body)
            self._flush_head()
            self.out.append(body)
            self._out_bytes += len(body)
        self._end()
        self.conn.flush()

    def write_interim(self, status: int, header_block: bytes = b"") -> None:
        if self.response_started or self.aborted or self.closed:
            return
        fields = [(b":status", b"%d" % status), *parse_header_block(header_block)]
        try:
            self.conn.core.send_headers(self.stream_id, fields)
        except H2Error:
            return
        self.conn.schedule_flush()

    def start_response(
        self,
        status: int,
        reason: bytes,
        header_block: bytes,
        content_length: int | None,
        no_body: bool = False,
        has_date: bool = False,
    ) -> None:
        """Prepares the response head; it leaves with the first DATA, at `flush()`, or with
        END_STREAM at `end()` (so a head-only upstream response, such as gRPC's
        trailers-only error, stays one HEADERS frame with END_STREAM)."""
        if self.response_started or self.aborted:
            return
        self.response_started = True
        self.status = status
        self.last_write = time.monotonic()
        head = [(b":status", b"%d" % status)]
        head += parse_header_block(header_block)
        if not has_date:  # Go's server adds Date when the handler did not
            head.append((b"date", http_date()))
        if content_length is not None:
            head.append((b"content-length", b"%d" % content_length))
        self._head = head
        self._no_body = no_body or self.head_request

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
        """A relayed response whose body is all here: the stream takes it in parts."""
        self.start_response(status, reason, header_block, content_length, no_body, has_date)
        self.write(body)
        self.end()

    def set_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Response trailers to send with END_STREAM (gRPC's grpc-status, grpc-message)."""
        self._trailers = [(name.lower(), value) for name, value in trailers if name[:1] != b":"]

    def flush(self) -> None:
        if self._head is not None:
            self._flush_head()
        self.conn.flush()

    def _flush_head(self, end_stream: bool = False) -> None:
        head, self._head = self._head, None
        if head is None or self.closed:
            return
        try:
            self.conn.core.send_headers(self.stream_id, head, end_stream=end_stream)
        except H2Error as exc:
            self._stream_failed(exc)

    def write(self, data: bytes) -> None:
        if self.aborted or self.response_done or not data:
            return
        self.last_write = time.monotonic()
        self.body_bytes += len(data)
        if self._head is not None:
            self._flush_head()
        if self._no_body:
            return
        self.out.append(data)
        self._out_bytes += len(data)
        self._pump()
        self.conn.schedule_flush()

    def end(self, trailer_block: bytes = b"") -> None:
        if self.aborted or self.response_done:
            return
        if trailer_block:
            self.set_trailers(parse_header_block(trailer_block))
        self._end()
        self.conn.flush()

    def _end(self) -> None:
        self.response_done = True
        self._end_pending = True
        self._pump()

    def terminate_with(self, text: bytes) -> None:
        """Go's timeout handler after the response started (CONTRACT.md §2.8): the text is
        appended to the body and the stream ends (END_STREAM, no trailers)."""
        if self.aborted or self.response_done:
            return
        self._trailers = None
        if not self._no_body:
            self.write(text)
        self._end()
        self.conn.flush()

    def abort(self) -> None:
        """The response cannot be completed: RST_STREAM INTERNAL_ERROR, as Go's server does
        when a handler aborts (http.ErrAbortHandler)."""
        if self.aborted:
            return
        self.aborted = True
        self.response_done = True
        self.out.clear()
        if not self.closed:
            self.closed = True
            self.conn._reset(self.stream_id, INTERNAL_ERROR)
        self.conn.stream_finished(self)

    def upgrade_to_tunnel(self, head: bytes, peer: TunnelPeer) -> None:
        # HTTP/2 requests never carry `upgrade` (H2Core rejects the header); nothing to tunnel.
        self.abort()

    # ---- flow control -------------------------------------------------------

    def _pump(self) -> None:
        """Sends buffered DATA as far as the windows allow, then END_STREAM when asked."""
        if self.closed:
            return
        core = self.conn.core
        sid = self.stream_id
        out = self.out
        try:
            if self._head is not None and (out or self._end_pending):
                end_now = self._end_pending and not out and self._trailers is None
                self._flush_head(end_stream=end_now)
                if end_now:
                    self._sent_end()
                    return
            while out:
                window = core.window(sid)
                if window <= 0:
                    break
                size = min(window, core.max_outbound_frame_size)
                chunk = out[0]
                if len(chunk) <= size:
                    out.popleft()
                    self._out_bytes -= len(chunk)
                    last = not out and self._end_pending and self._trailers is None
                    core.send_data(sid, chunk, end_stream=last)
                    if last:
                        self._sent_end()
                        return
                else:
                    out[0] = chunk[size:]
                    self._out_bytes -= size
                    core.send_data(sid, chunk[:size])
            if not out and self._end_pending:
                if self._trailers is not None:
                    core.send_headers(sid, self._trailers, end_stream=True)
                else:
                    core.end_stream(sid)
                self._sent_end()
                return
        except H2Error as exc:
            self._stream_failed(exc)
            return
        self._update_producer()

    def _sent_end(self) -> None:
        self.closed = True
        if not self.body_done:
            # The response is complete but the client is still sending: stop it (Go's server
            # does the same once a handler has returned).
            self.conn._reset(self.stream_id, NO_ERROR)
        self._update_producer()
        self.conn.stream_finished(self)

    def _stream_failed(self, exc: Exception) -> None:
        log.debug("h2 stream %d failed: %s", self.stream_id, exc)
        self.closed = True
        self.out.clear()
        if not self.response_done:
            self.response_done = True
            self._client_gone()
        self.conn.stream_finished(self)

    def _update_producer(self) -> None:
        producer = self.producer
        if producer is None:
            return
        want_pause = not self.closed and (self.conn.write_paused or self._out_bytes > _OUT_HIGH_WATER)
        if want_pause and not self._producer_paused:
            self._producer_paused = True
            producer.pause_producing()
        elif not want_pause and self._producer_paused:
            self._producer_paused = False
            producer.resume_producing()

    # Called by the connection.
    def _client_gone(self) -> None:
        if self.aborted:
            return
        self.aborted = True
        self.response_done = True
        self.out.clear()
        callback, self.on_abort = self.on_abort, None
        if callback is not None:
            callback()
