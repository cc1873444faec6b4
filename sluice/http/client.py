"""HTTP/1.1 client side: pooled keep-alive connections to one upstream.

An `UpstreamConnection` carries one request at a time (no upstream pipelining)
and reports the response to a `ResponseSink` through callbacks, so the proxy
glue can relay bytes without a task or a queue in between.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import httptools

from ..native import mypyc_attr
from .errors import DialError, UpstreamClosed
from .headers import RelayedHead, ResponseHead, split_head
from .outbox import OutboxWriter

P = TypeVar("P", bound=asyncio.BaseProtocol)

__all__ = [
    "DialError",
    "DialPolicy",
    "H2ResponseSink",
    "ResponseSink",
    "Upstream",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamSource",
    "WholeResponseAsParts",
]

# Response body framings, as learnt from the response head.
_FRAMING_LENGTH = 0
_FRAMING_CHUNKED = 1
_FRAMING_EOF = 2
_FRAMING_NONE = 3


class ResponseSink(Protocol):
    def on_interim(self, status: int, head: ResponseHead) -> None: ...
    def on_response(self, status: int, reason: bytes, head: ResponseHead, body: bytes) -> None:
        """A whole response at once (head and all of its body), the connection already
        released: stands for on_response_head, on_response_body and on_response_end."""
    def on_response_head(self, status: int, reason: bytes, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_upstream_error(self, exc: BaseException) -> None: ...
    def on_upgrade(self, status: int, reason: bytes, head: ResponseHead, leftover: bytes) -> None: ...
    def on_read_done(self) -> None: ...
    def pause_request_body(self) -> None: ...
    def resume_request_body(self) -> None: ...



class H2ResponseSink(ResponseSink, Protocol):
    """A sink that also takes response trailers (from an h2c upstream: gRPC's grpc-status)."""

    def on_interim(self, status: int, head: RelayedHead) -> None: ...
    def on_response_head(self, status: int, reason: bytes, head: RelayedHead) -> None: ...
    def on_response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None: ...


class Upstream(Protocol):
    """One request's way upstream as the Forwarder drives it: an `UpstreamConnection`, or a
    stream on an h2c connection (h2client.H2UpstreamStream). A Protocol, so the compiled
    Forwarder checks no concrete class at run time."""

    tunnel: Any  # a TunnelPeer once upgraded (HTTP/1.1 only)

    @property
    def closed(self) -> bool: ...
    @property
    def head_seen(self) -> bool: ...
    @property
    def response_bytes(self) -> int: ...
    def begin(self, sink: H2ResponseSink, head: bytes, head_request: bool, has_body: bool) -> None: ...
    def write(self, data: bytes) -> None: ...
    def writelines(self, parts: tuple[bytes, ...]) -> None: ...
    def end_body(self) -> None: ...
    def close(self) -> None: ...
    def tunnel_eof(self) -> None: ...
    def pause_producing(self) -> None: ...
    def resume_producing(self) -> None: ...


class UpstreamSource(Protocol):
    """Where a Forwarder gets its `Upstream`: an `UpstreamPool` or an h2c pool."""

    def acquire_nowait(self) -> Upstream | None: ...
    async def connect(self) -> Upstream: ...
    def release(self, conn: Any) -> None: ...  # takes back what it handed out
    def close(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the compiled group
class WholeResponseAsParts:
    """ResponseSink mixin: `on_response` delivered as the three calls it stands for, for
    sinks with nothing to gain from having the whole response at once."""

    __slots__ = ()

    def on_response(self: ResponseSink, status: int, reason: bytes, head: ResponseHead, body: bytes) -> None:
        self.on_response_head(status, reason, head)
        if body:
            self.on_response_body(body)
        self.on_response_end()


class UpstreamConnection(OutboxWriter, asyncio.Protocol):
    __slots__ = (
        "_framing",
        "_head",
        "_head_request",
        "_parsing",
        "_rbuf",
        "_reason_of_101",
        "_remaining",
        "_reset_parser",
        "_status",
        "closed",
        "head_seen",
        "keep_alive",
        "parser",
        "paused",
        "pool",
        "request_sent",
        "response_bytes",
        "sink",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        OutboxWriter.__init__(self)
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.closed = False
        self.tunnel: Any = None  # a TunnelPeer once upgraded
        self.keep_alive = True
        self.paused = False  # reading paused for a slow downstream (pause_producing)
        self.request_sent = False
        self.head_seen = False
        self.response_bytes = 0
        self._head_request = False
        # Bytes of the response head(s) not yet parsed into a ResponseHead: httptools
        # frames the message, the raw head is filtered in one pass (no per-header calls).
        self._rbuf = b""
        self._head: ResponseHead | None = None
        self._reason_of_101 = b""
        self._status = 0
        self._framing = _FRAMING_LENGTH
        self._reset_parser = False
        # Fast framing (see `_fast_response`): whether httptools is parsing the current
        # response, and how many Content-Length body bytes are still to come if not.
        self._parsing = False
        self._remaining = 0

    # ---- driving a request --------------------------------------------------

    def begin(self, sink: ResponseSink, head: bytes, head_request: bool, has_body: bool) -> None:
        """Sends a request head; the body (if any) follows with `write`/`end_body`."""
        self.sink = sink
        self._head_request = head_request
        self._rbuf = b""
        self._head = None
        self._status = 0
        self.head_seen = False
        self.response_bytes = 0
        self._parsing = False
        self._remaining = 0
        self.request_sent = not has_body
        self.write(head)

    def end_body(self) -> None:
        self.request_sent = True

    def close(self) -> None:
        self.sink = None
        if not self.closed:
            self.flush_out()
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # ---- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._attach_outbox()
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.tunnel is not None:
            peer, self.tunnel = self.tunnel, None
            peer.tunnel_eof()
            return
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self.head_seen and self._framing == _FRAMING_EOF:
            # A response delimited by the connection closing is complete now.
            sink.on_response_end()
            return
        sink.on_upstream_error(exc or UpstreamClosed("EOF"))

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.tunnel_write(data)
            return
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: the upstream is confused or closing.
            self.close()
            return
        self.response_bytes += len(data)
        if self._remaining:
            self._body_counted(sink, data)
            return
        if not self._parsing:
            buf = self._rbuf + data if self._rbuf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._rbuf = buf  # the head is not complete yet
                return
            if self._fast_response(sink, buf, end):
                return
            # Anything but a plain Content-Length response: the parser takes it from the start.
            self._parsing = True
            self._rbuf = data = buf
        elif not self.head_seen:
            self._rbuf = self._rbuf + data if self._rbuf else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self._upgraded(bytes(data[offset:]))
        except httptools.HttpParserError as exc:
            sink, self.sink = self.sink, None
            self.close()
            if sink is not None:
                sink.on_upstream_error(exc)
            return
        if self._reset_parser:
            self._reset_parser = False
            self.parser = httptools.HttpResponseParser(self)
        sink = self.sink
        if sink is not None:
            sink.on_read_done()

    # ---- fast framing ---------------------------------------------------------

    def _fast_response(self, sink: ResponseSink, buf: bytes, end: int) -> bool:
        """Frames a plain final response without httptools: a valid status line, a head
        `ResponseHead` calls plain, and a Content-Length body (or none). That is nearly
        every response of a keep-alive app, and it saves the parser's feed and its
        callbacks per response. False leaves the response to the parser, untouched."""
        line_end = buf.find(b"\r\n")
        line = buf[:line_end]
        # `HTTP/1.x SSS reason`; anything else (other versions, 1xx, 101) goes to the parser.
        if len(line) < 12 or line[:7] != b"HTTP/1." or line[8] != 32 or (len(line) > 12 and line[12] != 32):
            return False
        code = line[9:12]
        minor = line[7]
        if not code.isdigit() or minor not in (48, 49) or code[0] < 50:
            return False
        head = ResponseHead(buf[line_end + 2 : end + 2])
        if not head.plain:
            return False
        status = int(code)
        if self._head_request or status in (204, 304):
            length = 0
            self._framing = _FRAMING_NONE
        elif head.content_length is None:
            return False  # delimited by the connection closing: the parser's way
        else:
            length = head.content_length
            self._framing = _FRAMING_LENGTH
        self._status = status
        self.head_seen = True
        self._rbuf = b""
        self.keep_alive = (b"close" not in head.connection) if minor == 49 else (b"keep-alive" in head.connection)
        start = end + 4
        if len(buf) - start == length:
            # The whole response in this read, the common case: one call to the sink.
            # Released first, so that a request the sink's completion admits (a breaker
            # or throttler grant) finds this connection idle in the pool.
            self._release()
            sink.on_response(status, line[13:], head, buf[start:] if length else b"")
            if self.paused and self.sink is None:
                self.resume_producing()  # back-pressure from parts delivered after the release
            return True
        sink.on_response_head(status, line[13:], head)
        if self.sink is not sink:
            return True  # the sink gave up on the exchange while taking the head
        if start < len(buf):
            self._remaining = length
            self._body_counted(sink, buf[start:])
        elif length:
            self._remaining = length
            sink.on_read_done()
        else:
            self._finish()
        return True

    def _body_counted(self, sink: ResponseSink, data: bytes) -> None:
        """Body bytes of a fast-framed response; the response ends with the last one."""
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            sink.on_response_body(data)
            sink.on_read_done()
            return
        self._remaining = 0
        if len(data) > remaining:
            # Bytes beyond the response: the connection is out of step, not reusable.
            self.keep_alive = False
            data = data[:remaining]
        if data:
            sink.on_response_body(data)
        if self.sink is sink:
            self._finish()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause_producing()
        elif self.sink is not None:
            self.sink.pause_request_body()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume_producing()
        elif self.sink is not None:
            self.sink.resume_request_body()

    # ---- flow control as a producer (downstream slow) -----------------------

    def pause_producing(self) -> None:
        if self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_producing(self) -> None:
        if self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    # ---- tunnel (after 101) -------------------------------------------------

    def tunnel_write(self, data: bytes) -> None:
        self.write(data)

    def tunnel_eof(self) -> None:
        self.tunnel = None
        self.close()

    def _upgraded(self, leftover: bytes) -> None:
        sink, self.sink = self.sink, None
        head = self._head
        if sink is None or self._status != 101 or head is None:
            self.close()
            return
        sink.on_upgrade(self._status, self._reason_of_101, head, leftover)

    # ---- httptools callbacks ------------------------------------------------

    def _take_head(self) -> tuple[bytes, ResponseHead]:
        """The next complete head in the read buffer (an interim one may precede the final)."""
        buf = self._rbuf
        end = buf.find(b"\r\n\r\n")
        raw = buf[: end + 2] if end >= 0 else buf
        self._rbuf = buf[end + 4 :] if end >= 0 else b""
        reason, block = split_head(raw)
        return reason, ResponseHead(block)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._status = status
        reason, head = self._take_head()
        if 100 <= status < 200 and status != 101:
            # Interim response (100 Continue, 103 Early Hints): relay, then keep
            # parsing the same exchange (llhttp sees it as a message of its own).
            if self.sink is not None:
                self.sink.on_interim(status, head)
            return
        if status == 101:
            self._head = head
            self._reason_of_101 = reason
            return  # the upgrade surfaces as HttpParserUpgrade
        self.head_seen = True
        self._rbuf = b""
        self.keep_alive = self.parser.should_keep_alive()
        content_length = head.content_length
        chunked = head.chunked
        if self._head_request or status in (204, 304):
            self._framing = _FRAMING_NONE
        elif chunked:
            self._framing = _FRAMING_CHUNKED
            content_length = None
        elif content_length is not None:
            self._framing = _FRAMING_LENGTH
        else:
            self._framing = _FRAMING_EOF
            self.keep_alive = False
        if chunked:
            head.content_length = None
        sink = self.sink
        if sink is not None:
            sink.on_response_head(status, reason, head)
        if self._head_request:
            # llhttp cannot be told that a HEAD response has no body; finish the
            # response here and start a fresh parser for the next one.
            self._reset_parser = True
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if not self.head_seen or self._head_request:
            return  # end of an interim response, or a HEAD response already finished
        self._finish()

    def _finish(self) -> None:
        sink = self.sink
        self._release()
        if sink is not None:
            sink.on_response_end()

    def _release(self) -> None:
        """The response is over: back to the pool, or closed if it cannot be reused."""
        self.sink = None
        # Reusable only if both directions ended cleanly on a persistent connection.
        if self.keep_alive and self.request_sent and not self.closed:
            if self.paused:
                # The last bytes filled a slow client's buffer: the exchange is over, and
                # nothing would lift that pause once pooled (the next response never read).
                self.resume_producing()
            self.pool.release(self)
        else:
            self.close()


class DialPolicy:
    """Knative's upstream dial retry (CONTRACT.md §2.6): per-attempt timeout
    50 ms × 1.4^k for up to 15 attempts with ~30 ms jittered sleeps between; a
    refused connection fails at once (the app is not listening: retrying would
    only delay the 502)."""

    def __init__(self, base: float = 0.05, factor: float = 1.4, steps: int = 15, sleep: float = 0.03) -> None:
        self.base = base
        self.factor = factor
        self.steps = steps
        self.sleep = sleep

    def attempt_timeouts(self) -> list[float]:
        return [self.base * self.factor**k for k in range(self.steps)]

    async def connect(self, factory: Callable[[], P], host: str, port: int, ssl: Any = None) -> P:
        """Dials with this policy; the protocol instance on success, DialError otherwise."""
        loop = asyncio.get_running_loop()
        last_exc: BaseException | None = None
        for timeout in self.attempt_timeouts():
            try:
                _transport, proto = await asyncio.wait_for(
                    loop.create_connection(factory, host, port, ssl=ssl), timeout
                )
            except TimeoutError as exc:
                last_exc = exc
                await asyncio.sleep(self.sleep * (0.5 + random.random()))
                continue
            except OSError as exc:
                raise DialError(host, port, exc) from exc
            return proto
        raise DialError(host, port, last_exc or TimeoutError())


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the compiled group
class UpstreamPool:
    """Idle keep-alive connections to one host:port, most recently used first."""

    def __init__(
        self,
        host: str,
        port: int,
        max_idle: int,
        ssl: Any = None,
        dial: DialPolicy | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.ssl = ssl
        self.dial = dial or DialPolicy()
        self.idle: list[UpstreamConnection] = []
        self.open_connections = 0
        self.dialing = 0  # connects in progress (not yet counted in open_connections)
        self.closing = False
        self._h2c: UpstreamSource | None = None  # h2 hook: see h2c_pool()

    def acquire_nowait(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        self.dialing += 1
        try:
            conn = await self.dial.connect(lambda: UpstreamConnection(self), self.host, self.port, self.ssl)
        finally:
            self.dialing -= 1
        self.open_connections += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if self.closing or conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        self.idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        self.open_connections -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def h2c_pool(self) -> UpstreamSource:
        """h2 hook: the h2c (prior-knowledge HTTP/2) pool to the same host:port, for HTTP/2
        requests (CONTRACT.md §2.6 "upstream protocol mirrors downstream"). Created on first
        use, so h2 is imported only then."""
        pool = self._h2c
        if pool is None:
            pool = self._h2c = self._new_h2c_pool()
        return pool

    def _new_h2c_pool(self) -> UpstreamSource:
        """The h2c pool `h2c_pool` creates; a subclass dialling otherwise (TLS) overrides it."""
        from .h2client import H2UpstreamPool

        return H2UpstreamPool(self.host, self.port, self.dial, self.ssl)

    def close(self) -> None:
        self.closing = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
        if self._h2c is not None:  # h2 hook
            self._h2c.close()
