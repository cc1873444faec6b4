"""The HTTP/2 connection core (RFC 9113) under h2server.py and h2client.py: frames, stream
states, flow-control windows, SETTINGS, PING, RST_STREAM and GOAWAY, with HPACK from h2hpack.py.

Sans-I/O: `receive(data)` parses frames and reports each to the owner through the `H2Events`
methods; the `send_*` calls queue frames that `data_to_send()` hands over for one socket
write. Compiled with mypyc (hatch_build.NATIVE_MODULES), this source being the reference.

It replaces the pure-Python `h2` state machine on the proxy path: relaying one unary gRPC
call through h2 cost ~340 µs of proxy CPU, two thirds of it in h2, hpack and hyperframe
(bench/RESULTS.md, "HTTP/2 and gRPC"). It covers what a proxy needs, no more: no server push
(refused, ENABLE_PUSH=0 / PROTOCOL_ERROR), PRIORITY read and ignored (RFC 9113 §5.3.2).
Errors follow §5.4: `H2ConnectionError` (the owner sends GOAWAY with its code and closes)
or a stream error, answered here with RST_STREAM and reported as `h2_reset`.

Receive-window policy: the owner `ack()`s DATA once it has consumed it; a WINDOW_UPDATE goes
out once half a window is consumed (as h2 and Go do), so a unary call costs no extra frames.
"""

from __future__ import annotations

import base64
import struct
from typing import Protocol

from .h2hpack import Decoder, Encoder, HPACKError

__all__ = [
    "ERROR_NAMES",
    "PREFACE",
    "H2ConnectionError",
    "H2Core",
    "H2Error",
    "H2Events",
    "StreamClosedError",
    "goaway_frame",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # §3.4

# Frame types (§6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (§7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
ERROR_NAMES = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)

# SETTINGS identifiers (§6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384  # we never advertise more, so every frame we take is at most this
# A header block spread over more CONTINUATION frames than this is a flood (CVE-2024-27316
# and relatives), answered with ENHANCE_YOUR_CALM; h2 used the same bound.
MAX_CONTINUATIONS = 64

_HEADER = struct.Struct(">BHBBI")  # 24-bit length as (high byte, low 16 bits), type, flags, stream
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_GOAWAY = struct.Struct(">II")
_PRIORITY_DEP = struct.Struct(">I")

# Request fields never valid in HTTP/2 (§8.2.2); `te` is allowed with `trailers` only.
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_METHOD, _SCHEME, _AUTHORITY, _PATH, _PROTOCOL = 1, 2, 4, 8, 16
_PSEUDO_BITS = {
    b":method": _METHOD,
    b":scheme": _SCHEME,
    b":authority": _AUTHORITY,
    b":path": _PATH,
    b":protocol": _PROTOCOL,
}


class H2Error(Exception):
    """A frame we were asked to send cannot be sent (closed stream, window exceeded)."""


class StreamClosedError(H2Error):
    pass


class H2ConnectionError(H2Error):
    """The peer broke the protocol: a connection error (§5.4.1) with this error code."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class H2Events(Protocol):
    """What the owner (h2server.H2ServerConnection, h2client.H2UpstreamConnection) is told.
    `kind` of h2_headers: 0 the request or the final response head, 1 an informational (1xx)
    response head, 2 trailers."""

    def h2_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], kind: int, end_stream: bool) -> None: ...

    def h2_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None: ...

    def h2_reset(self, stream_id: int, error_code: int) -> None: ...

    def h2_window(self, stream_id: int) -> None: ...

    def h2_settings(self) -> None: ...

    def h2_ping(self) -> None: ...

    def h2_goaway(self, last_stream_id: int, error_code: int) -> None: ...


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return _HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)


def goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    return frame_header(8, GOAWAY, 0, 0) + _GOAWAY.pack(last_stream_id, error_code)


def settings_payload(values: dict[int, int]) -> bytes:
    return b"".join(_SETTING.pack(key, value) for key, value in values.items())


class _Stream:
    __slots__ = ("head_done", "local_closed", "recv_window", "remote_closed", "send_window", "stream_id", "unacked")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.local_closed = False
        self.remote_closed = False
        self.head_done = False  # the request head (server) or the final response head (client)


class H2Core:
    """One HTTP/2 connection's protocol state. `client` says which side we are."""

    def __init__(
        self,
        events: H2Events,
        client: bool,
        settings: dict[int, int],
        connection_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.events = events
        self.client = client
        self.local_settings = settings
        self.local_stream_window = settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        self.local_connection_window = connection_window
        # The peer's settings (§6.5.2 defaults until its SETTINGS arrive).
        self.remote_initial_window = DEFAULT_WINDOW
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self.remote_max_concurrent_streams = MAX_WINDOW  # "unlimited" until said otherwise
        self.settings_seen = False
        self.streams: dict[int, _Stream] = {}
        self.send_window = DEFAULT_WINDOW  # connection level, ours to spend
        self.recv_window = DEFAULT_WINDOW  # connection level, the peer's to spend
        self.conn_unacked = 0
        self.highest_remote = 0  # the highest stream id the peer opened
        self.next_local = 1 if client else 2
        self.closed = False  # stop processing: the owner is tearing the connection down
        self.decoder = Decoder(max_list_size=settings.get(MAX_HEADER_LIST_SIZE, 1 << 20))
        self.encoder = Encoder()
        self._out: list[bytes] = []
        self._buf = b""
        self._preface_left = 0 if client else len(PREFACE)
        self._first_frame = True  # the peer's first frame must be SETTINGS (§3.4)
        # A header block in progress (HEADERS without END_HEADERS): its stream, flags, parts.
        self._block_stream = 0
        self._block_flags = 0
        self._block_parts: list[bytes] = []
        self._block_frames = 0

    # ---- setting up ------------------------------------------------------------

    def initiate(self) -> None:
        """Our connection preface: (client) the magic, SETTINGS, the connection window."""
        if self.client:
            self._out.append(PREFACE)
        payload = settings_payload(self.local_settings)
        self._out.append(frame_header(len(payload), SETTINGS, 0, 0) + payload)
        increment = self.local_connection_window - DEFAULT_WINDOW
        if increment > 0:
            self.recv_window += increment
            self._out.append(frame_header(4, WINDOW_UPDATE, 0, 0) + _U32.pack(increment))

    def initiate_upgrade(self, http2_settings: bytes) -> None:
        """Server side of `Upgrade: h2c` (RFC 7540 §3.2): the client's SETTINGS came in the
        HTTP2-Settings header (base64url); the request becomes stream 1, half-closed (remote).
        Raises ValueError (or binascii.Error) for a malformed header."""
        payload = base64.urlsafe_b64decode(http2_settings + b"=" * (-len(http2_settings) % 4))
        if len(payload) % 6:
            raise ValueError("HTTP2-Settings is not a list of settings")
        self._apply_settings(payload)
        stream = _Stream(1, self.remote_initial_window, self.local_stream_window)
        stream.remote_closed = True
        stream.head_done = True
        self.streams[1] = stream
        self.highest_remote = 1
        self.initiate()

    # ---- bytes in --------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Processes every complete frame in `data` (plus what earlier calls left over).
        Raises H2ConnectionError on a connection error; stops early once `closed` is set."""
        buf = self._buf + data if self._buf else data
        pos = 0
        if self._preface_left:
            take = min(self._preface_left, len(buf))
            at = len(PREFACE) - self._preface_left
            if buf[:take] != PREFACE[at : at + take]:
                raise H2ConnectionError(PROTOCOL_ERROR, "invalid client preface")
            self._preface_left -= take
            pos = take
        end = len(buf)
        while end - pos >= 9 and not self.closed:
            high, low, kind, flags, sid = _HEADER.unpack_from(buf, pos)
            length = (high << 16) | low
            if length > DEFAULT_FRAME_SIZE:
                # Checked on the frame header: a peer announcing a 16 MiB frame is not buffered.
                raise H2ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                break
            start = pos + 9
            pos = start + length
            self._frame(kind, flags, sid & 0x7FFFFFFF, buf[start:pos])
        self._buf = buf[pos:] if pos < end else b""

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._first_frame:
            if kind != SETTINGS or flags & ACK:
                raise H2ConnectionError(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._first_frame = False
        if self._block_stream and kind != CONTINUATION:
            raise H2ConnectionError(PROTOCOL_ERROR, "a frame inside a header block")
        if kind == DATA:
            self._on_data(flags, sid, payload)
        elif kind == HEADERS:
            self._on_headers(flags, sid, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == RST_STREAM:
            self._on_rst(sid, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, sid, payload)
        elif kind == PING:
            if sid:
                raise H2ConnectionError(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if not flags & ACK:
                self._out.append(frame_header(8, PING, ACK, 0) + payload)
                self.events.h2_ping()
        elif kind == GOAWAY:
            if sid:
                raise H2ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "GOAWAY payload too short")
            last, code = _GOAWAY.unpack_from(payload, 0)
            self.events.h2_goaway(last & 0x7FFFFFFF, code)
        elif kind == PRIORITY:
            if not sid:
                raise H2ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR)
            elif (_PRIORITY_DEP.unpack_from(payload, 0)[0] & 0x7FFFFFFF) == sid:
                self._stream_error(sid, PROTOCOL_ERROR)
        elif kind == PUSH_PROMISE:
            raise H2ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")
        # Unknown frame types are ignored (§4.1, §5.5).

    def _is_idle(self, sid: int) -> bool:
        """Never opened by either side (§5.1): frames other than HEADERS/PRIORITY are errors."""
        if (sid & 1) == (1 if self.client else 0):  # a stream we would open
            return sid >= self.next_local
        return sid > self.highest_remote

    def _strip_padding(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "PADDED frame without a pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise H2ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        flow_len = len(payload)
        self.recv_window -= flow_len
        if self.recv_window < 0:
            raise H2ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        data = self._strip_padding(flags, payload)
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed or not stream.head_done:
            if stream is None and self._is_idle(sid):
                raise H2ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # A stream that is closed (or reset by us): the bytes still count on the
            # connection window, which we give back (§6.9).
            self._ack_connection(flow_len)
            if stream is not None:
                self._stream_error(sid, STREAM_CLOSED if stream.remote_closed else PROTOCOL_ERROR)
            return
        stream.recv_window -= flow_len
        if stream.recv_window < 0:
            self._ack_connection(flow_len)
            self._stream_error(sid, FLOW_CONTROL_ERROR)
            return
        end = bool(flags & END_STREAM)
        if end:
            stream.remote_closed = True
            if stream.local_closed:
                del self.streams[sid]
        self.events.h2_data(sid, data, flow_len, end)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(sid, flags, block)
            return
        self._block_stream = sid
        self._block_flags = flags
        self._block_parts = [block]
        self._block_frames = 0

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if not self._block_stream or sid != self._block_stream:
            raise H2ConnectionError(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block_frames += 1
        if self._block_frames > MAX_CONTINUATIONS:
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        self._block_parts.append(payload)
        if flags & END_HEADERS:
            parts, self._block_parts = self._block_parts, []
            self._block_stream = 0
            self._header_block(sid, self._block_flags, b"".join(parts))

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            fields = self.decoder.decode(block)  # always: the HPACK context must stay in sync
        except HPACKError as exc:
            raise H2ConnectionError(COMPRESSION_ERROR, str(exc)) from None
        end = bool(flags & END_STREAM)
        stream = self.streams.get(sid)
        if stream is None:
            if self.client or not sid & 1:
                if self.client and sid & 1 and sid < self.next_local:
                    return  # a stream we reset or finished: ignored (§5.4.2)
                raise H2ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {sid} the peer cannot open")
            if sid <= self.highest_remote:
                # A closed stream: h2 and Go answer with STREAM_CLOSED.
                self._out.append(frame_header(4, RST_STREAM, 0, sid) + _U32.pack(STREAM_CLOSED))
                return
            self.highest_remote = sid
            stream = _Stream(sid, self.remote_initial_window, self.local_stream_window)
            self.streams[sid] = stream
            if not _valid_request(fields):
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            stream.head_done = True
            kind = 0
        elif stream.remote_closed:
            self._stream_error(sid, STREAM_CLOSED)
            return
        elif not stream.head_done:
            # Client side: a response head, informational (1xx, several allowed) or final.
            status = fields[0][1] if fields and fields[0][0] == b":status" else b""
            if len(status) != 3 or not status.isdigit() or not _valid_response(fields):
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            if status[0] == 0x31:  # "1xx"
                if end:
                    self._stream_error(sid, PROTOCOL_ERROR)
                    return
                kind = 1
            else:
                stream.head_done = True
                kind = 0
        else:
            # Trailers (§8.1): they end the stream and carry no pseudo-header.
            if not end or any(name[:1] == b":" for name, _ in fields):
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            kind = 2
        if end:
            stream.remote_closed = True
            if stream.local_closed:
                del self.streams[sid]
        self.events.h2_headers(sid, fields, kind, end)

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not increment:
                raise H2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2ConnectionError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self.events.h2_window(0)
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise H2ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if not increment:
            self._stream_error(sid, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR)
            return
        self.events.h2_window(sid)

    def _on_rst(self, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        stream = self.streams.pop(sid, None)
        if stream is None:
            if self._is_idle(sid):
                raise H2ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self.events.h2_reset(sid, _U32.unpack(payload)[0])

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        self._apply_settings(payload)
        self._out.append(frame_header(0, SETTINGS, ACK, 0))
        self.settings_seen = True
        self.events.h2_settings()

    def _apply_settings(self, payload: bytes) -> None:
        for at in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, at)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for stream in self.streams.values():  # §6.9.2
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2ConnectionError(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == MAX_FRAME_SIZE:
                if value < DEFAULT_FRAME_SIZE or value > 0xFFFFFF:
                    raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_outbound_frame_size = value
            elif key == ENABLE_PUSH:
                if value > 1 or (self.client and value):
                    raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            elif key == MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent_streams = value
            elif key == HEADER_TABLE_SIZE:
                self.encoder.set_max_table_size(value)
            # MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored (§6.5.2).

    def _stream_error(self, sid: int, code: int) -> None:
        """§5.4.2: RST_STREAM; the owner hears of it if it knew the stream."""
        stream = self.streams.pop(sid, None)
        self._out.append(frame_header(4, RST_STREAM, 0, sid) + _U32.pack(code))
        # The server's owner knows a stream from its request head on; the client's, from the start.
        if stream is not None and (self.client or stream.head_done):
            self.events.h2_reset(sid, code)

    # ---- flow control ----------------------------------------------------------

    def window(self, sid: int) -> int:
        """What may be sent on the stream now: the smaller of its window and the connection's."""
        stream = self.streams.get(sid)
        if stream is None:
            return 0
        return min(stream.send_window, self.send_window)

    def ack(self, flow_len: int, sid: int) -> None:
        """The owner consumed `flow_len` bytes of DATA on `sid`: give them back to the peer,
        in WINDOW_UPDATEs of half a window or more."""
        if flow_len <= 0:
            return
        self._ack_connection(flow_len)
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed:
            return
        stream.unacked += flow_len
        if stream.unacked >= self.local_stream_window >> 1:
            stream.recv_window += stream.unacked
            self._out.append(frame_header(4, WINDOW_UPDATE, 0, sid) + _U32.pack(stream.unacked))
            stream.unacked = 0

    def _ack_connection(self, flow_len: int) -> None:
        self.conn_unacked += flow_len
        if self.conn_unacked >= self.local_connection_window >> 1:
            self.recv_window += self.conn_unacked
            self._out.append(frame_header(4, WINDOW_UPDATE, 0, 0) + _U32.pack(self.conn_unacked))
            self.conn_unacked = 0

    # ---- bytes out -------------------------------------------------------------

    def next_stream_id(self) -> int:
        sid = self.next_local
        if sid > MAX_WINDOW:
            raise H2Error("stream ids exhausted")
        return sid

    def send_headers(self, sid: int, fields: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if not self.client or sid != self.next_local:
                raise StreamClosedError(f"stream {sid} is closed")
            self.next_local = sid + 2
            stream = _Stream(sid, self.remote_initial_window, self.local_stream_window)
            self.streams[sid] = stream
        elif stream.local_closed:
            raise StreamClosedError(f"stream {sid} is closed")
        block = self.encoder.encode(fields)
        flags = END_STREAM if end_stream else 0
        out = self._out
        limit = self.max_outbound_frame_size
        if len(block) <= limit:
            out.append(frame_header(len(block), HEADERS, flags | END_HEADERS, sid))
            out.append(block)
        else:
            out.append(frame_header(limit, HEADERS, flags, sid))
            out.append(block[:limit])
            at = limit
            while at < len(block):
                part = block[at : at + limit]
                at += len(part)
                out.append(frame_header(len(part), CONTINUATION, END_HEADERS if at >= len(block) else 0, sid))
                out.append(part)
        if end_stream:
            self._local_end(stream)

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.local_closed:
            raise StreamClosedError(f"stream {sid} is closed")
        size = len(data)
        if size > stream.send_window or size > self.send_window or size > self.max_outbound_frame_size:
            raise H2Error(f"DATA of {size} bytes beyond the window or frame size")
        stream.send_window -= size
        self.send_window -= size
        self._out.append(frame_header(size, DATA, END_STREAM if end_stream else 0, sid))
        if size:
            self._out.append(data)
        if end_stream:
            self._local_end(stream)

    def end_stream(self, sid: int) -> None:
        self.send_data(sid, b"", end_stream=True)

    def _local_end(self, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream.stream_id]

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM for a stream still open; nothing for one already closed."""
        if self.streams.pop(sid, None) is not None:
            self._out.append(frame_header(4, RST_STREAM, 0, sid) + _U32.pack(code))

    def goaway(self, error_code: int, last_stream_id: int | None = None) -> None:
        last = self.highest_remote if last_stream_id is None else last_stream_id
        self._out.append(goaway_frame(last, error_code))

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data


def _valid_request(fields: list[tuple[bytes, bytes]]) -> bool:
    """§8.3.1 and §8.2: pseudo-headers first, known, not repeated; :method, :scheme and :path
    present (CONNECT: :authority, no :scheme/:path); lower-case names; no connection-specific
    field; `te` only `trailers`."""
    seen = 0  # a bit per pseudo-header
    method = b""
    regular = False
    for name, value in fields:
        if name[:1] == b":":
            bit = _PSEUDO_BITS.get(name, 0)
            if regular or not bit or seen & bit:
                return False
            seen |= bit
            if bit == _METHOD:
                method = value
            continue
        regular = True
        if not name or name.lower() != name or name in _CONNECTION_SPECIFIC:
            return False
        if name == b"te" and value.lower() != b"trailers":
            return False
    if not seen & _METHOD:
        return False
    if method == b"CONNECT" and not seen & _PROTOCOL:
        return seen & (_AUTHORITY | _SCHEME | _PATH) == _AUTHORITY
    return seen & (_SCHEME | _PATH) == _SCHEME | _PATH


def _valid_response(fields: list[tuple[bytes, bytes]]) -> bool:
    """Only `:status`, once, before the regular fields (§8.3.2)."""
    regular = False
    statuses = 0
    for name, _value in fields:
        if name[:1] == b":":
            if regular or name != b":status":
                return False
            statuses += 1
        else:
            regular = True
    return statuses == 1
