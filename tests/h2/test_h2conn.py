"""The compiled HTTP/2 core (h2conn.H2Core) and HPACK (h2hpack) against the `h2`, `hpack` and
`hyperframe` libraries: each side of a connection is ours, the other is theirs, and frames go
back and forth as bytes. Runs compiled and interpreted, as the whole suite does."""

from __future__ import annotations

import random
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hyperframe.frame import DataFrame, HeadersFrame

from sluice.http.h2conn import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    INITIAL_WINDOW_SIZE,
    PREFACE,
    PROTOCOL_ERROR,
    H2ConnectionError,
    H2Core,
    H2Error,
    StreamClosedError,
)
from sluice.http.h2hpack import Decoder, Encoder, HPACKError, huffman_decode

Fields = list[tuple[bytes, bytes]]
REQUEST: Fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/s/M")]


class Recorder:
    """An H2Events owner that writes down what the core reports."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def h2_headers(self, stream_id: int, fields: Fields, kind: int, end_stream: bool) -> None:
        self.events.append(("headers", stream_id, fields, kind, end_stream))

    def h2_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.events.append(("data", stream_id, data, flow_len, end_stream))

    def h2_reset(self, stream_id: int, error_code: int) -> None:
        self.events.append(("reset", stream_id, error_code))

    def h2_window(self, stream_id: int) -> None:
        self.events.append(("window", stream_id))

    def h2_settings(self) -> None:
        self.events.append(("settings",))

    def h2_ping(self) -> None:
        self.events.append(("ping",))

    def h2_goaway(self, last_stream_id: int, error_code: int) -> None:
        self.events.append(("goaway", last_stream_id, error_code))

    def take(self) -> list[tuple[object, ...]]:
        events, self.events = self.events, []
        return events


def their_client(**settings: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    if settings:
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={getattr(h2.settings.SettingCodes, k): v for k, v in settings.items()}
        )
    conn.initiate_connection()
    return conn


def their_server(**settings: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    if settings:
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={getattr(h2.settings.SettingCodes, k): v for k, v in settings.items()}
        )
    conn.initiate_connection()
    return conn


def our_server(window: int = 1 << 20) -> tuple[H2Core, Recorder]:
    rec = Recorder()
    core = H2Core(rec, client=False, settings={INITIAL_WINDOW_SIZE: window}, connection_window=16 << 20)
    core.initiate()
    return core, rec


def our_client() -> tuple[H2Core, Recorder]:
    rec = Recorder()
    core = H2Core(rec, client=True, settings={INITIAL_WINDOW_SIZE: 1 << 20}, connection_window=16 << 20)
    core.initiate()
    return core, rec


def server_pair(**settings: int) -> tuple[h2.connection.H2Connection, H2Core, Recorder]:
    """Their client and our server, past the prefaces and the SETTINGS exchange."""
    client = their_client(**settings)
    core, rec = our_server()
    core.receive(client.data_to_send())
    client.receive_data(core.data_to_send())
    core.receive(client.data_to_send())
    assert rec.take() == [("settings",)]
    return client, core, rec


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal_block(fields: Fields) -> bytes:
    """An HPACK block of literals without indexing (leaves the dynamic table alone)."""
    return b"".join(b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v for n, v in fields)


# ---- HPACK ----------------------------------------------------------------------


def test_huffman_decodes_what_hpack_encodes() -> None:
    encoder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    rng = random.Random(7)
    for _ in range(500):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        assert huffman_decode(encoder.encode(value)) == value
    assert huffman_decode(encoder.encode(b"www.example.com")) == b"www.example.com"


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",  # 8 bits of zero padding: not a prefix of EOS
        b"\xff\xff\xff\xff",  # EOS itself (30 ones) inside the string
        b"\x1f\xff",  # '0' then 11 bits of padding: more than 7
    ],
)
def test_bad_huffman_is_refused(data: bytes) -> None:
    with pytest.raises(HPACKError):
        huffman_decode(data)


def test_decoder_follows_hpacks_encoder_with_indexing_and_huffman() -> None:
    theirs = hpack.Encoder()
    ours = Decoder()
    rng = random.Random(3)
    for i in range(300):
        fields = [*REQUEST, (b"x-n", b"%d" % (i % 9)), (b"x-big", b"v" * rng.randrange(600))]
        if i == 150:
            theirs.header_table_size = 256  # emits a dynamic table size update
        assert ours.decode(theirs.encode(fields, huffman=bool(i % 2))) == fields
    assert ours.max_table_size == 256


def test_encoder_is_read_by_hpacks_decoder_across_table_size_changes() -> None:
    ours = Encoder()
    theirs = hpack.Decoder()
    for i in range(400):
        fields = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"x-n", b"%d" % (i % 40))]
        fields += [(b"authorization", b"secret"), (b"x-big", b"z" * (i * 7 % 3000))]
        if i in (100, 200, 300):
            size = {100: 100, 200: 0, 300: 4096}[i]
            ours.set_max_table_size(size)  # the peer's SETTINGS_HEADER_TABLE_SIZE
        assert theirs.decode(ours.encode(fields), raw=True) == fields
    # Repeated fields are indexed: the second block is one byte per field.
    again = ours.encode([(b"content-type", b"application/grpc"), (b"x-n", b"7")])
    assert len(again) == 2


def test_encoder_never_indexes_credentials() -> None:
    block = Encoder().encode([(b"authorization", b"Bearer x")])
    assert block[0] & 0xF0 == 0x10  # §6.2.3 never indexed


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbf\x40",  # an index beyond both tables
        b"\x3f\xe2\x1f",  # a table size update to 4097: over our SETTINGS_HEADER_TABLE_SIZE
        b"\x82\x20",  # a table size update after a field
        b"\x40\x85ab",  # a literal shorter than its length
        b"\xff\xff\xff\xff\xff\xff\x01",  # an integer beyond 2^28
    ],
)
def test_decoder_refuses_bad_blocks(block: bytes) -> None:
    with pytest.raises(HPACKError):
        Decoder().decode(block)


def test_decoder_caps_the_header_list() -> None:
    decoder = Decoder(max_list_size=100)
    with pytest.raises(HPACKError):
        decoder.decode(hpack.Encoder().encode([(b"x", b"y" * 80), (b"z", b"y" * 80)]))


# ---- our server, their client -----------------------------------------------------


def test_request_response_with_trailers_and_settings_ack() -> None:
    client, core, rec = server_pair()
    client.send_headers(1, REQUEST)
    client.send_data(1, b"hello", end_stream=True)
    core.receive(client.data_to_send())
    assert rec.take() == [("headers", 1, REQUEST, 0, False), ("data", 1, b"hello", 5, True)]
    core.send_headers(1, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    core.send_data(1, b"world")
    core.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    events = client.receive_data(core.data_to_send())
    got: dict[type, Any] = {type(e): e for e in events}
    assert got[h2.events.ResponseReceived].headers == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert got[h2.events.DataReceived].data == b"world"
    assert got[h2.events.TrailersReceived].headers == [(b"grpc-status", b"0")]
    assert h2.events.StreamEnded in got
    assert 1 not in core.streams  # both sides closed
    with pytest.raises(StreamClosedError):
        core.send_data(1, b"late")


def test_settings_are_acknowledged() -> None:
    client = their_client()
    core, _rec = our_server()
    core.receive(client.data_to_send())
    events = client.receive_data(core.data_to_send())
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
    assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)


def test_padded_frames_and_priority_are_read() -> None:
    _client, core, rec = server_pair()
    # Built by hand (h2 sends no padding on HEADERS), with a literal-only HPACK block.
    plain = literal_block(REQUEST)
    headers = HeadersFrame(1, data=plain, flags=["END_HEADERS", "PADDED", "PRIORITY"], pad_length=7)
    headers.depends_on, headers.stream_weight = 0, 15
    data = DataFrame(1, data=b"abc", flags=["END_STREAM", "PADDED"], pad_length=10)
    core.receive(headers.serialize() + data.serialize())
    events = rec.take()
    assert events[0] == ("headers", 1, REQUEST, 0, False)
    assert events[1] == ("data", 1, b"abc", 3 + 10 + 1, True)  # padding counts on the window


def test_continuation_frames_make_one_header_block() -> None:
    client, core, rec = server_pair()
    big = [*REQUEST, *[(b"x-h%d" % i, b"v" * 1000) for i in range(40)]]  # > 16 KiB: CONTINUATIONs
    client.send_headers(1, big, end_stream=True)
    data = client.data_to_send()
    assert data[3] == 1 and any(data[i] == 9 for i in range(len(data)))  # HEADERS, then CONTINUATION
    core.receive(data)
    assert rec.take() == [("headers", 1, big, 0, True)]
    # Our own big head goes out as HEADERS + CONTINUATION, which h2 reassembles.
    core.send_headers(1, [(b":status", b"200"), *big[4:]], end_stream=True)
    events = client.receive_data(core.data_to_send())
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"200"), *big[4:]]


def test_byte_by_byte_delivery() -> None:
    client = their_client()
    core, rec = our_server()
    client.send_headers(1, REQUEST)
    client.send_data(1, b"x" * 100, end_stream=True)
    for byte in client.data_to_send():
        core.receive(bytes([byte]))
    events = rec.take()
    assert events[0] == ("settings",)
    assert events[1] == ("headers", 1, REQUEST, 0, False)
    assert b"".join(e[2] for e in events[2:] if e[0] == "data") == b"x" * 100  # type: ignore[misc]


def test_send_windows_follow_window_updates_and_settings() -> None:
    client, core, rec = server_pair()
    client.send_headers(1, REQUEST, end_stream=True)
    core.receive(client.data_to_send())
    rec.take()
    core.send_headers(1, [(b":status", b"200")])
    assert core.window(1) == 65535  # h2's defaults until it says more
    sent = 0
    while core.window(1) > 0:
        chunk = min(core.window(1), core.max_outbound_frame_size)
        core.send_data(1, b"d" * chunk)
        sent += chunk
    assert sent == 65535
    with pytest.raises(H2Error):
        core.send_data(1, b"d")
    received = 0
    for event in client.receive_data(core.data_to_send()):
        if isinstance(event, h2.events.DataReceived):
            received += len(event.data)
            client.acknowledge_received_data(event.flow_controlled_length, 1)
    assert received == 65535
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100_000})
    core.receive(client.data_to_send())
    events = rec.take()
    assert ("window", 1) in events and ("window", 0) in events and ("settings",) in events
    assert core.window(1) == min(100_000, core.send_window)


def test_larger_max_frame_size_is_used_for_output_and_ours_is_enforced() -> None:
    client, core, _rec = server_pair(MAX_FRAME_SIZE=1 << 20)
    assert core.max_outbound_frame_size == 1 << 20
    client.send_headers(1, REQUEST)
    core.receive(client.data_to_send())
    with pytest.raises(H2ConnectionError) as info:
        core.receive(frame(0, 0, 1, b"x" * 16385))
    assert info.value.error_code == FRAME_SIZE_ERROR


def test_reset_ping_and_goaway_are_reported() -> None:
    client, core, rec = server_pair()
    client.send_headers(1, REQUEST)
    client.reset_stream(1, 8)
    client.ping(b"12345678")
    client.close_connection(last_stream_id=0)
    core.receive(client.data_to_send())
    assert rec.take() == [("headers", 1, REQUEST, 0, False), ("reset", 1, 8), ("ping",), ("goaway", 0, 0)]
    assert core.data_to_send().endswith(frame(6, 1, 0, b"12345678"))  # the PING's ACK


def test_upgrade_makes_stream_1_half_closed() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    token = client.initiate_upgrade_connection()
    assert token is not None
    core = H2Core(Recorder(), client=False, settings={INITIAL_WINDOW_SIZE: 1 << 20})
    core.initiate_upgrade(token)
    core.send_headers(1, [(b":status", b"200")], end_stream=True)
    client.receive_data(core.data_to_send())
    assert core.streams == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (frame(0, 1, 3, b"x"), PROTOCOL_ERROR),  # DATA on an idle stream
        (frame(8, 0, 0, b"\x00\x00\x00\x00"), PROTOCOL_ERROR),  # connection WINDOW_UPDATE of 0
        (frame(8, 0, 0, b"\x7f\xff\xff\xff"), FLOW_CONTROL_ERROR),  # window over 2^31-1
        (frame(3, 0, 5, b"\x00\x00\x00\x08"), PROTOCOL_ERROR),  # RST_STREAM on an idle stream
        (frame(4, 0, 0, b"\x00\x04\x80\x00\x00\x00"), FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE 2^31
        (frame(4, 0, 0, b"\x00\x05\x00\x00\x10\x00"), PROTOCOL_ERROR),  # MAX_FRAME_SIZE below 16384
        (frame(4, 0, 0, b"\x00\x05\x00"), FRAME_SIZE_ERROR),  # SETTINGS of 3 bytes
        (frame(4, 1, 0, b"\x00\x05\x00\x00\x40\x00"), FRAME_SIZE_ERROR),  # SETTINGS ACK with a payload
        (frame(6, 0, 0, b"1234"), FRAME_SIZE_ERROR),  # PING of 4 bytes
        (frame(1, 4, 2, b"\x82\x86\x84"), PROTOCOL_ERROR),  # HEADERS on an even (server) stream
        (frame(1, 0, 1, b"\x82") + frame(6, 0, 0, b"12345678"), PROTOCOL_ERROR),  # a frame inside a block
        (frame(9, 4, 1, b"\x82"), PROTOCOL_ERROR),  # CONTINUATION without HEADERS
        (frame(1, 4, 1, b"\xbf\x40"), COMPRESSION_ERROR),  # garbage HPACK
        (frame(5, 4, 1, b"\x00\x00\x00\x02\x82"), PROTOCOL_ERROR),  # PUSH_PROMISE from a client
        (frame(1, 0, 1, b"\x82") + frame(9, 0, 1, b"\x00") * 65, ENHANCE_YOUR_CALM),  # CONTINUATION flood
    ],
)
def test_connection_errors(payload: bytes, code: int) -> None:
    _client, core, _rec = server_pair()
    with pytest.raises(H2ConnectionError) as info:
        core.receive(payload)
    assert info.value.error_code == code


def test_bad_preface_and_first_frame() -> None:
    core, _rec = our_server()
    with pytest.raises(H2ConnectionError):
        core.receive(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    core, _rec = our_server()
    with pytest.raises(H2ConnectionError):
        core.receive(PREFACE + frame(6, 0, 0, b"12345678"))  # PING before SETTINGS


def test_data_beyond_the_connection_window_is_a_flow_control_error() -> None:
    client, core, _rec = server_pair()
    client.send_headers(1, REQUEST)
    core.receive(client.data_to_send())
    core.recv_window = 10  # as if the client had spent the rest
    with pytest.raises(H2ConnectionError) as info:
        core.receive(frame(0, 0, 1, b"x" * 11))
    assert info.value.error_code == FLOW_CONTROL_ERROR


@pytest.mark.parametrize(
    "fields",
    [
        [*REQUEST, (b"X-Upper", b"1")],
        [*REQUEST, (b"connection", b"close")],
        [*REQUEST, (b"te", b"gzip")],
        [(b":method", b"GET"), (b"x", b"1"), (b":path", b"/"), (b":scheme", b"http")],  # pseudo after regular
        [(b":method", b"GET"), (b":path", b"/")],  # no :scheme
        [*REQUEST, (b":path", b"/again")],
        [*REQUEST, (b":status", b"200")],
    ],
)
def test_malformed_requests_are_stream_errors(fields: Fields) -> None:
    _client, core, rec = server_pair()
    core.receive(frame(1, 5, 1, literal_block(fields)))
    assert rec.take() == []  # never reported: answered with RST_STREAM(PROTOCOL_ERROR)
    assert core.data_to_send().endswith(frame(3, 0, 1, struct.pack(">I", PROTOCOL_ERROR)))
    core.receive(frame(1, 5, 3, b"\x83\x86\x84\x41\x01a"))  # the connection goes on
    assert rec.take()[0][:2] == ("headers", 3)


def test_window_update_is_sent_after_half_a_window() -> None:
    client, core, rec = server_pair()
    client.send_headers(1, REQUEST)
    core.receive(client.data_to_send())
    core.data_to_send()
    for _ in range(40):
        client.send_data(1, b"x" * 16384)
        core.receive(client.data_to_send())
    for event in rec.take()[1:]:
        core.ack(event[3], 1)  # type: ignore[arg-type]
    updates = [e for e in client.receive_data(core.data_to_send()) if isinstance(e, h2.events.WindowUpdated)]
    assert [e.stream_id for e in updates] == [1]  # the stream's, not yet the 16 MiB connection's
    assert updates[0].delta is not None and updates[0].delta >= (1 << 20) // 2


# ---- our client, their server -----------------------------------------------------


def test_client_request_with_interim_response_and_trailers() -> None:
    core, rec = our_client()
    server = their_server(HEADER_TABLE_SIZE=0)
    server.receive_data(core.data_to_send())
    core.receive(server.data_to_send())
    assert rec.take() == [("settings",)]
    sid = core.next_stream_id()
    core.send_headers(sid, [*REQUEST, (b"te", b"trailers")])
    core.send_data(sid, b"ping", end_stream=True)
    events = server.receive_data(core.data_to_send())
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert request.headers == [*REQUEST, (b"te", b"trailers")]  # HPACK with a 0-size table works
    server.send_headers(sid, [(b":status", b"100")])
    server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    server.send_data(sid, b"pong")
    server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    core.receive(server.data_to_send())
    assert rec.take() == [
        ("headers", sid, [(b":status", b"100")], 1, False),
        ("headers", sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], 0, False),
        ("data", sid, b"pong", 4, False),
        ("headers", sid, [(b"grpc-status", b"0")], 2, True),
    ]
    assert core.next_stream_id() == sid + 2
    assert core.streams == {}


def test_client_reports_upstream_reset_and_goaway() -> None:
    core, rec = our_client()
    server = their_server(MAX_CONCURRENT_STREAMS=7)
    server.receive_data(core.data_to_send())
    core.receive(server.data_to_send())
    assert core.remote_max_concurrent_streams == 7
    core.send_headers(1, REQUEST, end_stream=True)
    core.send_headers(3, REQUEST, end_stream=True)
    server.receive_data(core.data_to_send())
    server.reset_stream(1, 2)
    server.close_connection(last_stream_id=1)
    core.receive(server.data_to_send())
    assert rec.take()[-2:] == [("reset", 1, 2), ("goaway", 1, 0)]
    core.reset_stream(3, 8)
    assert core.data_to_send() == frame(3, 0, 3, struct.pack(">I", 8))
