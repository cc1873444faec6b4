"""Byte-level HTTP/2 helpers for tests: an asyncio h2c client over a real socket (frames and
windows under the test's control) and an h2c upstream app built on the h2 library."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

Fields = list[tuple[bytes, bytes]]


@dataclass
class StreamResult:
    headers: Fields = field(default_factory=list)
    informational: list[Fields] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    trailers: Fields = field(default_factory=list)
    ended: bool = False
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def body(self) -> bytes:
        return bytes(self.buffer)

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H2Client:
    """One h2c connection (prior knowledge unless `upgrade_request` is used)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_ack: bool = True) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.streams: dict[int, StreamResult] = {}
        self.auto_ack = auto_ack
        self.unacked: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.received_bytes = 0
        self.goaways: list[tuple[int, int]] = []  # (last stream id, error code)
        self._buffer = b""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, auto_ack: bool = True, window: int | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, auto_ack)
        if window is not None:
            client.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        client.conn.initiate_connection()
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read_loop())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.received_bytes += len(data)
                for event in self.conn.receive_data(self._strip_goaway(data)):
                    self._on_event(event)
                self.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            for result in self.streams.values():
                result.done.set()
            self.closed.set()

    def _strip_goaway(self, data: bytes) -> bytes:
        """Records GOAWAY frames and keeps them from h2, whose state machine treats every
        GOAWAY as the end (a graceful one lets open streams finish, RFC 9113 §6.8)."""
        self._buffer += data
        out = []
        buf = self._buffer
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            frame, buf = buf[: 9 + length], buf[9 + length :]
            if frame[3] == 7:
                self.goaways.append(
                    (int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF, int.from_bytes(frame[13:17], "big"))
                )
            else:
                out.append(frame)
        self._buffer = buf
        return b"".join(out)

    def _on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        result = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and result is not None:
            result.headers = list(event.headers or [])
        elif isinstance(event, h2.events.InformationalResponseReceived) and result is not None:
            result.informational.append(list(event.headers or []))
        elif isinstance(event, h2.events.DataReceived) and result is not None:
            result.buffer += event.data or b""
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
            else:
                # A client that stops reading one stream: the connection window is credited
                # (other streams go on), the stream's is not.
                length = event.flow_controlled_length or 0
                if length:
                    self.conn.increment_flow_control_window(length)
                self.unacked[sid or 0] = self.unacked.get(sid or 0, 0) + length
        elif isinstance(event, h2.events.TrailersReceived) and result is not None:
            result.trailers = list(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded) and result is not None:
            result.ended = True
            result.done.set()
        elif isinstance(event, h2.events.StreamReset) and result is not None:
            result.reset = int(event.error_code or 0)
            result.done.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def ack(self, sid: int) -> None:
        amount = self.unacked.pop(sid, 0)
        if amount:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.conn.increment_flow_control_window(amount, stream_id=sid)
            self.flush()

    def start(
        self,
        path: str = "/",
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: str = "example.com",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        fields += [(k.lower().encode(), v.encode()) for k, v in headers or []]
        self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end)
        self.flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self.flush()

    async def result(self, sid: int, timeout: float = 10.0) -> StreamResult:
        result = self.streams[sid]
        await asyncio.wait_for(result.done.wait(), timeout)
        return result

    async def request(self, path: str = "/", timeout: float = 10.0, **kw: Any) -> StreamResult:
        return await self.result(self.start(path, **kw), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class UpstreamRequest:
    stream_id: int
    headers: Fields
    body: bytes = b""
    ended: bool = False
    reset: int | None = None
    conn: UpstreamConn | None = None

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


AppHandler = Callable[["UpstreamRequest"], Coroutine[Any, Any, None]]


class UpstreamConn:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.requests: dict[int, UpstreamRequest] = {}
        self.window_waiters: list[asyncio.Future[None]] = []
        self.auto_ack = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def respond(self, sid: int, status: int = 200, headers: Fields | None = None, end: bool = False) -> None:
        self.conn.send_headers(sid, [(b":status", b"%d" % status), *(headers or [])], end_stream=end)
        self.flush()

    async def send_body(self, sid: int, data: bytes, end: bool = True) -> int:
        """Sends as the windows allow; returns how much was sent (all unless the stream died)."""
        sent = 0
        view = memoryview(data)
        while sent < len(data):
            try:
                window = self.conn.local_flow_control_window(sid)
            except h2.exceptions.StreamClosedError:
                return sent
            if window <= 0:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.window_waiters.append(fut)
                try:
                    await asyncio.wait_for(fut, 0.2)
                except TimeoutError:
                    pass
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(data) - sent)
            self.conn.send_data(sid, bytes(view[sent : sent + size]))
            sent += size
            self.flush()
            await self.writer.drain()
        if end:
            self.conn.end_stream(sid)
            self.flush()
        return sent

    def trailers(self, sid: int, fields: Fields) -> None:
        self.conn.send_headers(sid, fields, end_stream=True)
        self.flush()


@dataclass
class H2App:
    port: int
    requests: list[UpstreamRequest]
    conns: list[UpstreamConn]


@contextlib.asynccontextmanager
async def h2_upstream(handler: AppHandler, auto_ack: bool = True) -> AsyncIterator[H2App]:
    """An h2c server; `handler` runs per request once its body ended (or at once with
    `stream=True` semantics: it is called at HEADERS and can watch `req.body`)."""
    requests: list[UpstreamRequest] = []
    conns: list[UpstreamConn] = []
    tasks: set[asyncio.Task[None]] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = UpstreamConn(writer)
        up.auto_ack = auto_ack
        conns.append(up)
        up.conn.initiate_connection()
        up.flush()
        try:
            while data := await reader.read(65536):
                for event in up.conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        req = UpstreamRequest(event.stream_id or 0, list(event.headers or []), conn=up)
                        up.requests[req.stream_id] = req
                        requests.append(req)
                        task = asyncio.get_running_loop().create_task(handler(req))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif isinstance(event, h2.events.DataReceived):
                        req = up.requests[event.stream_id or 0]
                        req.body += event.data or b""
                        if up.auto_ack:
                            up.conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                    elif isinstance(event, h2.events.StreamEnded):
                        up.requests[event.stream_id or 0].ended = True
                    elif isinstance(event, h2.events.StreamReset):
                        up.requests[event.stream_id or 0].reset = int(event.error_code or 0)
                    elif isinstance(event, h2.events.WindowUpdated):
                        waiters, up.window_waiters = up.window_waiters, []
                        for fut in waiters:
                            if not fut.done():
                                fut.set_result(None)
                up.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield H2App(port, requests, conns)
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        for up in conns:
            up.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def wait_ended(req: UpstreamRequest, timeout: float = 5.0) -> None:
    await wait_for(lambda: req.ended or req.reset is not None, timeout)
