"""Stat / WireStatMessage(s) protobuf encoding, hand-written (CONTRACT.md §1.1).

proto3, package `metrics`: fields in ascending number order, zero-valued scalars
omitted, doubles as 8-byte little-endian (wire type 1), int64 as varint. The
bytes match gogo/protobuf's marshaller, so Go peers decode what we write and we
decode what they write. Unknown fields are skipped on decode, as protobuf requires.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "DecodeError",
    "Stat",
    "WireStatMessage",
    "decode_stat",
    "decode_wire_stat_messages",
    "encode_stat",
    "encode_wire_stat_messages",
]

# Wire types.
_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5

_double = struct.Struct("<d")

# The autoscaler reads at most this many bytes of a scraped Stat (§1.1).
MAX_SCRAPED_STAT_BYTES = 6 * 10 + 256 + 20


class DecodeError(ValueError):
    """A payload that is not a valid encoding of the expected message."""


@dataclass(slots=True)
class Stat:
    pod_name: str = ""
    average_concurrent_requests: float = 0.0
    average_proxied_concurrent_requests: float = 0.0
    request_count: float = 0.0
    proxied_request_count: float = 0.0
    process_uptime: float = 0.0
    timestamp: int = 0  # Unix seconds (§7: never milliseconds)


@dataclass(slots=True)
class WireStatMessage:
    namespace: str = ""
    name: str = ""
    stat: Stat | None = field(default=None)


# Field number -> attribute for the five doubles of Stat, in field order.
_STAT_DOUBLES = (
    (2, "average_concurrent_requests"),
    (3, "average_proxied_concurrent_requests"),
    (4, "request_count"),
    (5, "proxied_request_count"),
    (6, "process_uptime"),
)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def encode_stat(stat: Stat) -> bytes:
    out = bytearray()
    if stat.pod_name:
        out += _len_field(1, stat.pod_name.encode())
    for number, attr in _STAT_DOUBLES:
        value: float = getattr(stat, attr)
        if value != 0.0:
            out.append(number << 3 | _I64)
            out += _double.pack(value)
    if stat.timestamp:
        out.append(7 << 3 | _VARINT)
        out += _varint(stat.timestamp)
    return bytes(out)


def encode_wire_stat_message(msg: WireStatMessage) -> bytes:
    out = bytearray()
    if msg.namespace:
        out += _len_field(1, msg.namespace.encode())
    if msg.name:
        out += _len_field(2, msg.name.encode())
    if msg.stat is not None:
        out += _len_field(3, encode_stat(msg.stat))
    return bytes(out)


def encode_wire_stat_messages(messages: list[WireStatMessage]) -> bytes:
    return b"".join(_len_field(1, encode_wire_stat_message(m)) for m in messages)


# ---- decoding ---------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def _field_at(buf: bytes, pos: int) -> tuple[int, int, int | bytes, int]:
    """The field starting at `pos`: (field number, wire type, value, position after it)."""
    n = len(buf)
    key, pos = _read_varint(buf, pos)
    number, wtype = key >> 3, key & 7
    if number == 0:
        raise DecodeError("field number 0")
    value: int | bytes
    if wtype == _VARINT:
        value, pos = _read_varint(buf, pos)
    elif wtype == _I64:
        if pos + 8 > n:
            raise DecodeError("truncated fixed64")
        value = buf[pos : pos + 8]
        pos += 8
    elif wtype == _LEN:
        length, pos = _read_varint(buf, pos)
        if pos + length > n:
            raise DecodeError("truncated length-delimited field")
        value = buf[pos : pos + length]
        pos += length
    elif wtype == _I32:
        if pos + 4 > n:
            raise DecodeError("truncated fixed32")
        value = buf[pos : pos + 4]
        pos += 4
    else:
        raise DecodeError(f"unsupported wire type {wtype}")
    return number, wtype, value, pos


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Splits a message into (field number, wire type, value) triples."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    n = len(buf)
    while pos < n:
        number, wtype, value, pos = _field_at(buf, pos)
        out.append((number, wtype, value))
    return out


def _text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what}: expected a length-delimited field")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: invalid UTF-8") from exc


# The tag byte of each double field of Stat (field << 3 | fixed64): a one-byte key.
_STAT_DOUBLE_TAGS = {number << 3 | _I64: attr for number, attr in _STAT_DOUBLES}
_STAT_DOUBLE_NUMBERS = dict(_STAT_DOUBLES)
_POD_NAME_TAG = 1 << 3 | _LEN


def decode_stat(buf: bytes) -> Stat:
    """Decodes a Stat; fields in any order, unknown ones skipped.

    The autoscaler decodes one per scraped pod (10,000 a second at 10,000 pods): the
    doubles and a pod name shorter than 128 bytes (what a queue-proxy sends) are read in
    place after their one-byte tag; any other field goes through the generic `_field_at`."""
    stat = Stat()
    pos = 0
    n = len(buf)
    doubles = _STAT_DOUBLE_TAGS
    unpack = _double.unpack_from
    while pos < n:
        tag = buf[pos]
        attr = doubles.get(tag)
        if attr is not None and pos + 9 <= n:
            setattr(stat, attr, unpack(buf, pos + 1)[0])
            pos += 9
            continue
        if tag == _POD_NAME_TAG and pos + 1 < n and buf[pos + 1] < 0x80:  # a one-byte length
            end = pos + 2 + buf[pos + 1]
            if end <= n:
                stat.pod_name = _text(buf[pos + 2 : end], "Stat.pod_name")
                pos = end
                continue
        number, wtype, value, pos = _field_at(buf, pos)
        if number == 1:
            stat.pod_name = _text(value, "Stat.pod_name")
        elif number in _STAT_DOUBLE_NUMBERS:
            if wtype != _I64 or not isinstance(value, bytes):
                raise DecodeError(f"Stat field {number}: expected a double")
            setattr(stat, _STAT_DOUBLE_NUMBERS[number], _double.unpack(value)[0])
        elif number == 7:
            if wtype != _VARINT or not isinstance(value, int):
                raise DecodeError("Stat.timestamp: expected a varint")
            stat.timestamp = value - (1 << 64) if value >= 1 << 63 else value
    return stat


def decode_wire_stat_message(buf: bytes) -> WireStatMessage:
    msg = WireStatMessage()
    for number, _wtype, value in _fields(buf):
        if number == 1:
            msg.namespace = _text(value, "WireStatMessage.namespace")
        elif number == 2:
            msg.name = _text(value, "WireStatMessage.name")
        elif number == 3:
            if not isinstance(value, bytes):
                raise DecodeError("WireStatMessage.stat: expected a message")
            msg.stat = decode_stat(value)
    return msg


def decode_wire_stat_messages(buf: bytes) -> list[WireStatMessage]:
    out: list[WireStatMessage] = []
    for number, _wtype, value in _fields(buf):
        if number == 1:
            if not isinstance(value, bytes):
                raise DecodeError("WireStatMessages.messages: expected a message")
            out.append(decode_wire_stat_message(value))
    return out
