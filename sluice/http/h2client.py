"""h2c upstream: prior-knowledge HTTP/2 to the user container (queue-proxy) or to a
queue-proxy (activator), for requests that arrived over HTTP/2 (CONTRACT.md §2.6 "upstream
protocol mirrors downstream", §3.7). Required for gRPC: its status travels in trailers.

`H2UpstreamPool` stands in for an `UpstreamPool` and `H2UpstreamStream` for an
`UpstreamConnection`, so the `Forwarder` drives an HTTP/2 stream with the same calls as an
HTTP/1.1 connection: `begin` (the request head it built, re-read as HTTP/2 fields), `write`,
`end_body`, `close` (RST_STREAM CANCEL: a cancelled client cancels the upstream stream, not
a shared connection), and the `ResponseSink` callbacks back, plus `on_response_trailers`.

Streams share connections up to the server's SETTINGS_MAX_CONCURRENT_STREAMS; a new
connection is dialled (with the same retry policy as HTTP/1.1, §2.6) only when every
connection is full, and concurrent requests wait for one dial rather than each dialling.

Flow control: response DATA is acknowledged once relayed, and not while the downstream side
asked us to pause (`pause_producing`), so a slow client throttles the upstream at its window;
request DATA leaves as the upstream's windows allow, the rest waits and the inbound body is
paused (`sink.pause_request_body()`) until a WINDOW_UPDATE makes room.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import Any, cast

from ..native import mypyc_attr
from .client import DialPolicy, H2ResponseSink, UpstreamClosed
from .h2conn import (
    CANCEL,
    ENABLE_PUSH,
    ERROR_NAMES,
    INITIAL_WINDOW_SIZE,
    INTERNAL_ERROR,
    MAX_HEADER_LIST_SIZE,
    H2ConnectionError,
    H2Core,
    H2Error,
)
from .h2hpack import memo_put
from .headers import HOP_BY_HOP, reason_phrase
from .outbox import OutboxWriter

__all__ = ["H2ResponseHead", "H2StreamReset", "H2UpstreamConnection", "H2UpstreamPool", "H2UpstreamStream"]

log = logging.getLogger("sluice.http")

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
# Streams assumed available before the server's SETTINGS arrive (Go's transport assumes 100).
_INITIAL_MAX_STREAMS = 100
# Request bytes kept beyond the upstream's window before the inbound body is paused.
_OUT_HIGH_WATER = 64 * 1024

# Request fields not valid in HTTP/2 (RFC 9113 §8.2.2); `te: trailers` is kept (gRPC needs it).
_CONNECTION_SPECIFIC = HOP_BY_HOP | {b"http2-settings"}
_SETTINGS = {ENABLE_PUSH: 0, INITIAL_WINDOW_SIZE: STREAM_WINDOW, MAX_HEADER_LIST_SIZE: 1 << 20}


@mypyc_attr(native_class=False)  # compiled classes cannot subclass ConnectionError
class H2StreamReset(ConnectionError):
    """The upstream reset the stream; the text is Go's (it becomes the 502 body, §2.6)."""

    def __init__(self, stream_id: int, code: int) -> None:
        name = ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else f"unknown error code 0x{code:x}"
        super().__init__(f"stream error: stream ID {stream_id}; {name}; received from peer")
        self.code = code


class H2ResponseHead:
    """The `ResponseHead` surface the Forwarder reads, built from HTTP/2 response fields."""

    __slots__ = ("block", "chunked", "content_length", "has_date", "upgrade_lines")

    def __init__(self, block: bytes, content_length: int | None, has_date: bool) -> None:
        self.block = block
        self.content_length = content_length
        self.has_date = has_date
        self.chunked = False
        self.upgrade_lines = b""


def request_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 request head (forward.build_request_head) as HTTP/2 fields: pseudo-headers
    from the request line and Host, lower-cased names, connection-specific fields dropped.
    The result is shared (cached): callers must not change it."""
    cached = _fields_cache.get(head)
    if cached is not None:
        return cached
    fields = _request_fields(head)
    # The relayed heads of one client repeat (a gRPC client calling one method).
    memo_put(_fields_cache, head, fields, 1024, 256)
    return fields


_fields_cache: dict[bytes, list[tuple[bytes, bytes]]] = {}


def _request_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    target = rest.rpartition(b" ")[0]
    authority = b""
    fields: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        value = line[colon + 1 :].strip()
        if name == b"host":
            authority = value
        elif name in _CONNECTION_SPECIFIC:
            if name == b"te" and value.lower() == b"trailers":
                fields.append((b"te", b"trailers"))
        else:
            fields.append((name, value))
    if method == b"CONNECT":
        return [(b":method", method), (b":authority", authority or target), *fields]
    pseudo = [(b":method", method), (b":scheme", b"http")]
    if authority:
        pseudo.append((b":authority", authority))
    pseudo.append((b":path", target or b"/"))
    return pseudo + fields


def _response_head(headers: list[tuple[bytes, bytes]]) -> tuple[int, H2ResponseHead]:
    status = 0
    parts: list[bytes] = []
    length: int | None = None
    has_date = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":status":
                status = int(value)
            continue
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
            continue
        if name == b"date":
            has_date = True
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    return status, H2ResponseHead(b"".join(parts), length, has_date)


class H2UpstreamStream:
    """One request/response on an upstream HTTP/2 connection (the Forwarder's `conn`)."""

    tunnel: Any = None  # HTTP/2 streams are never upgraded to tunnels

    __slots__ = (
        "_body_paused",
        "_end_pending",
        "_out_bytes",
        "_paused",
        "_released",
        "_unacked",
        "closed",
        "conn",
        "ended",
        "head_seen",
        "out",
        "request_sent",
        "response_bytes",
        "sink",
        "stream_id",
    )

    def __init__(self, conn: H2UpstreamConnection) -> None:
        conn.reserved += 1
        self.conn = conn
        self.sink: H2ResponseSink | None = None
        self.stream_id = 0
        self.closed = False
        self.ended = False
        self.head_seen = False
        self.response_bytes = 0
        self.request_sent = False
        self.out: deque[bytes] = deque()
        self._out_bytes = 0
        self._end_pending = False
        self._paused = False
        self._unacked = 0
        self._body_paused = False
        self._released = False

    # ---- the UpstreamConnection surface -------------------------------------

    def tunnel_eof(self) -> None:
        """Never called for a stream (it is never a tunnel: `tunnel` stays None); a close."""
        self.close()

    def begin(self, sink: H2ResponseSink, head: bytes, head_request: bool, has_body: bool) -> None:
        self.sink = sink
        conn = self.conn
        try:
            if conn.closed:
                raise H2Error("EOF")
            sid = conn.core.next_stream_id()
            conn.core.send_headers(sid, request_fields(head), end_stream=not has_body)
        except (H2Error, ValueError) as exc:
            # Reported on the next loop turn: the Forwarder is still attaching this stream.
            asyncio.get_running_loop().call_soon(self._fail, UpstreamClosed(str(exc) or "EOF"))
            return
        self.stream_id = sid
        self.request_sent = not has_body
        conn.streams[sid] = self
        conn.schedule_flush()

    def write(self, data: bytes) -> None:
        if self.closed or not data or not self.stream_id:
            return
        self.out.append(data)
        self._out_bytes += len(data)
        # Sent at the end of the loop turn, so that a body ending in the same turn (a unary
        # call: HEADERS, DATA, end) leaves as DATA with END_STREAM, not one more empty frame.
        self.conn.schedule_pump(self)
        self._update_body_pause()

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def end_body(self) -> None:
        if self.closed or not self.stream_id:
            return
        self._end_pending = True
        # The request is complete: it leaves now (through the loop's outbox, which coalesces
        # the writes of a busy iteration), not one loop iteration later.
        self.conn.pump_now(self)

    def close(self) -> None:
        """Cancels the exchange (client gone, timeout): RST_STREAM CANCEL, the connection stays."""
        self.sink = None
        if self.closed:
            return
        self.closed = True
        conn = self.conn
        if self.stream_id and not self.ended:
            conn.streams.pop(self.stream_id, None)
            conn.reset(self.stream_id, CANCEL)
        self._release()

    # Producer: the downstream client is slow → stop acknowledging response DATA.
    def pause_producing(self) -> None:
        self._paused = True

    def resume_producing(self) -> None:
        if self._paused:
            self._paused = False
            unacked, self._unacked = self._unacked, 0
            if unacked and not self.closed:
                self.conn.ack(unacked, self.stream_id)
                self.conn.schedule_flush()

    # ---- events from the connection -----------------------------------------

    def _on_interim(self, headers: list[tuple[bytes, bytes]]) -> None:
        status, head = _response_head(headers)
        if self.sink is not None:
            self.sink.on_interim(status, head)

    def _on_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        status, head = _response_head(headers)
        self.head_seen = True
        if self.sink is not None:
            self.sink.on_response_head(status, reason_phrase(status), head)

    def _on_data(self, data: bytes, flow_len: int) -> None:
        self.response_bytes += len(data)
        sink = self.sink
        if sink is not None and data:
            sink.on_response_body(data)
        if self._paused:
            self._unacked += flow_len
        else:
            self.conn.ack(flow_len, self.stream_id)

    def _on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.sink is not None:
            self.sink.on_response_trailers([(n, v) for n, v in headers if n[:1] != b":"])

    def _on_end(self) -> None:
        self.ended = True
        conn = self.conn
        conn.streams.pop(self.stream_id, None)
        if not self.request_sent and not self.closed:
            # The response is complete before the request body: stop sending it.
            conn.reset(self.stream_id, CANCEL)
        self.closed = True
        self.out.clear()
        self._release()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_response_end()

    def _fail(self, exc: BaseException) -> None:
        self.ended = True
        self.closed = True
        self.out.clear()
        self.conn.streams.pop(self.stream_id, None)
        self._release()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_upstream_error(exc)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.conn.stream_released()

    # ---- request body flow control ------------------------------------------

    def _pump(self) -> None:
        if self.closed:
            return
        conn = self.conn
        core = conn.core
        sid = self.stream_id
        out = self.out
        try:
            while out:
                window = core.window(sid)
                if window <= 0:
                    break
                size = min(window, core.max_outbound_frame_size)
                chunk = out[0]
                if len(chunk) <= size:
                    out.popleft()
                    self._out_bytes -= len(chunk)
                    last = not out and self._end_pending
                    core.send_data(sid, chunk, end_stream=last)
                    if last:
                        self._end_pending = False
                        self.request_sent = True
                else:
                    out[0] = chunk[size:]
                    self._out_bytes -= size
                    core.send_data(sid, chunk[:size])
            if not out and self._end_pending:
                self._end_pending = False
                self.request_sent = True
                core.end_stream(sid)
        except H2Error as exc:
            conn.streams.pop(sid, None)
            conn.reset(sid, INTERNAL_ERROR)
            self._fail(UpstreamClosed(str(exc) or "EOF"))
            return
        self._update_body_pause()

    def _update_body_pause(self) -> None:
        want_pause = self.conn.write_paused or self._out_bytes > _OUT_HIGH_WATER
        sink = self.sink
        if sink is None:
            return
        if want_pause and not self._body_paused:
            self._body_paused = True
            sink.pause_request_body()
        elif not want_pause and self._body_paused:
            self._body_paused = False
            sink.resume_request_body()


class H2UpstreamConnection(OutboxWriter, asyncio.Protocol):
    """One prior-knowledge h2c connection to the upstream, multiplexing streams. The protocol
    core (h2conn.H2Core) reports frames through the `h2_*` methods."""

    def __init__(self, pool: H2UpstreamPool) -> None:
        OutboxWriter.__init__(self)
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        # The fields we send are built here (lower-cased names, no connection-specific ones);
        # the app's response fields are re-read by h2server.parse_header_block before they
        # reach a client.
        self.core = H2Core(self, client=True, settings=_SETTINGS, connection_window=CONNECTION_WINDOW)
        self.streams: dict[int, H2UpstreamStream] = {}
        self.reserved = 0  # streams handed out and not finished (some may not have begun)
        self.closed = False
        self.goaway = False
        self.write_paused = False
        self._flush_handle: asyncio.Handle | None = None
        self._to_pump: list[H2UpstreamStream] = []
        self._touched: list[H2UpstreamStream] = []  # streams with response bytes in this read

    @property
    def available(self) -> bool:
        if self.closed or self.goaway:
            return False
        core = self.core
        limit = core.remote_max_concurrent_streams if core.settings_seen else _INITIAL_MAX_STREAMS
        return self.reserved < limit

    # ---- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._attach_outbox()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.core.initiate()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.pool._forget(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._fail(exc or UpstreamClosed("EOF"))

    def data_received(self, data: bytes) -> None:
        touched: list[H2UpstreamStream] = []
        self._touched = touched
        try:
            self.core.receive(data)  # reports each frame to the h2_* methods below
        except H2ConnectionError as exc:
            self._connection_error(exc)
            return
        self.flush()
        for stream in touched:
            sink = stream.sink
            if sink is not None:
                sink.on_read_done()

    # ---- frames, as H2Core reports them (h2conn.H2Events) -------------------

    def h2_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], kind: int, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if kind == 0:
            stream._on_head(fields)
            self._touch(stream)
        elif kind == 1:
            stream._on_interim(fields)
        else:
            stream._on_trailers(fields)
        if end_stream:
            stream._on_end()

    def h2_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.ack(flow_len, stream_id)
            return
        stream._on_data(data, flow_len)
        self._touch(stream)
        if end_stream:
            stream._on_end()

    def _touch(self, stream: H2UpstreamStream) -> None:
        touched = self._touched
        if not touched or touched[-1] is not stream:
            touched.append(stream)

    def h2_reset(self, stream_id: int, error_code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream._fail(H2StreamReset(stream_id, error_code))

    def h2_window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream._pump()
        else:
            self._pump_all()

    def h2_settings(self) -> None:
        self._pump_all()

    def h2_ping(self) -> None:
        return None  # the core queues the ACK

    def h2_goaway(self, last_stream_id: int, error_code: int) -> None:
        self._on_goaway(last_stream_id)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pump_all()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump_all()

    # ---- helpers ------------------------------------------------------------

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            stream._pump()

    def _on_goaway(self, last_stream_id: int) -> None:
        # No new streams here; the ones the server never saw can be retried elsewhere (the
        # Forwarder retries a body-less request on UpstreamClosed, as for a keep-alive race).
        self.goaway = True
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id:
                stream._fail(UpstreamClosed("EOF"))
        if not self.streams:
            self.close()

    def _connection_error(self, exc: H2ConnectionError) -> None:
        self.core.goaway(exc.error_code)
        self.flush()
        self.close()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._fail(exc)

    def ack(self, flow_len: int, sid: int) -> None:
        if flow_len <= 0 or self.closed:
            return
        self.core.ack(flow_len, sid)

    def reset(self, sid: int, code: int) -> None:
        if self.closed:
            return
        self.core.reset_stream(sid, code)
        self.schedule_flush()

    def stream_released(self) -> None:
        self.reserved -= 1
        if self.goaway and not self.streams and self.reserved <= 0:
            self.close()

    def flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        if self._to_pump:
            streams, self._to_pump = self._to_pump, []
            for stream in streams:
                stream._pump()
        data = self.core.data_to_send()
        if data:
            self.write(data)

    def schedule_flush(self) -> None:
        """The frames of one loop turn (HEADERS, DATA, END_STREAM of a unary call) leave in one write."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def schedule_pump(self, stream: H2UpstreamStream) -> None:
        if not self._to_pump or self._to_pump[-1] is not stream:
            self._to_pump.append(stream)
        self.schedule_flush()

    def pump_now(self, stream: H2UpstreamStream) -> None:
        if not self._to_pump or self._to_pump[-1] is not stream:
            self._to_pump.append(stream)
        self.flush()

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def close(self) -> None:
        if not self.closed:
            self.flush_out()
            self.closed = True
            if self.transport is not None:
                self.transport.close()


@mypyc_attr(allow_interpreted_subclasses=True)  # activator.tls_h2.TLSH2UpstreamPool
class H2UpstreamPool:
    """h2c connections to one host:port, shared by concurrent streams (an UpstreamPool stand-in)."""

    def __init__(self, host: str, port: int, dial: DialPolicy | None = None, ssl: Any = None) -> None:
        self.host = host
        self.port = port
        self.dial = dial or DialPolicy()
        # TLS upstream (the activator's system-internal-tls, §3.7): the context should offer
        # ALPN "h2" for a Go peer; a Sluice QP also takes the prior-knowledge preface over TLS.
        self.ssl = ssl
        self.conns: list[H2UpstreamConnection] = []
        self.closing = False
        self._dialing: asyncio.Task[H2UpstreamConnection] | None = None

    def acquire_nowait(self) -> H2UpstreamStream | None:
        for conn in self.conns:
            if conn.available:
                return H2UpstreamStream(conn)
        return None

    async def connect(self) -> H2UpstreamStream:
        while True:
            if self.closing:
                raise UpstreamClosed("EOF")
            stream = self.acquire_nowait()
            if stream is not None:
                return stream
            task = self._dialing
            if task is None:
                task = self._dialing = asyncio.get_running_loop().create_task(self._dial())
                task.add_done_callback(self._dial_done)
            # Every waiter shares the one dial (and its failure); cancelling a waiter does not
            # cancel the dial.
            await asyncio.shield(task)

    def _dial_done(self, task: asyncio.Task[H2UpstreamConnection]) -> None:
        if self._dialing is task:
            self._dialing = None
        if not task.cancelled():
            task.exception()  # retrieved by the waiters; silence "never retrieved" warnings

    async def _dial(self) -> H2UpstreamConnection:
        conn = await self.dial.connect(lambda: H2UpstreamConnection(self), self.host, self.port, self.ssl)
        if self.closing:
            conn.close()
            raise UpstreamClosed("EOF")
        self.conns.append(conn)
        return conn

    def release(self, conn: H2UpstreamStream) -> None:
        """A stream acquired for an exchange that ended before using it."""
        conn.close()

    def _forget(self, conn: H2UpstreamConnection) -> None:
        try:
            self.conns.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        self.closing = True
        if self._dialing is not None:
            self._dialing.cancel()
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.close()
