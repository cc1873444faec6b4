"""Stat / WireStatMessage(s) bytes, built by hand from CONTRACT.md §1.1's field table."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.wire import (
    MAX_SCRAPED_STAT_BYTES,
    DecodeError,
    Stat,
    WireStatMessage,
    decode_stat,
    decode_wire_stat_messages,
    encode_stat,
    encode_wire_stat_messages,
)


def d(x: float) -> bytes:
    return struct.pack("<d", x)


def test_empty_stat_is_empty_bytes() -> None:
    assert encode_stat(Stat()) == b""


def test_pod_name_only_before_first_report() -> None:
    # tag 0x0A (field 1, wire type 2), length, UTF-8 bytes
    assert encode_stat(Stat(pod_name="pod-a")) == b"\x0a\x05pod-a"


def test_every_field_in_order_with_its_tag() -> None:
    stat = Stat(
        pod_name="p",
        average_concurrent_requests=1.5,
        average_proxied_concurrent_requests=0.25,
        request_count=10.0,
        proxied_request_count=2.0,
        process_uptime=3.0,
        timestamp=1_700_000_000,
    )
    expected = (
        b"\x0a\x01p"
        + b"\x11" + d(1.5)
        + b"\x19" + d(0.25)
        + b"\x21" + d(10.0)
        + b"\x29" + d(2.0)
        + b"\x31" + d(3.0)
        # 1_700_000_000 = 0x6553F100; 7-bit groups low first: 0x00|0x80, 0x62|0x80, 0x4f|0x80, 0x2a|0x80, 0x06
        + b"\x38\x80\xe2\xcf\xaa\x06"
    )
    assert encode_stat(stat) == expected
    assert decode_stat(expected) == stat


def test_zero_scalars_are_omitted() -> None:
    assert encode_stat(Stat(pod_name="p", request_count=0.0, process_uptime=2.0)) == b"\x0a\x01p\x31" + d(2.0)


def test_wire_stat_messages_nesting() -> None:
    inner = encode_stat(Stat(pod_name="act", average_concurrent_requests=1.0, request_count=1.0))
    msg = b"\x0a\x02ns" + b"\x12\x03rev" + b"\x1a" + bytes([len(inner)]) + inner
    expected = b"\x0a" + bytes([len(msg)]) + msg
    wire = [WireStatMessage("ns", "rev", decode_stat(inner))]
    assert encode_wire_stat_messages(wire) == expected
    assert decode_wire_stat_messages(expected) == wire


def test_message_without_stat_decodes_with_none() -> None:
    assert decode_wire_stat_messages(b"\x0a\x04\x0a\x02ns") == [WireStatMessage("ns", "", None)]


def test_unknown_fields_are_skipped() -> None:
    # field 15 varint, field 16 length-delimited, field 17 fixed32, then pod_name
    payload = b"\x78\x05" + b"\x82\x01\x02hi" + b"\x8d\x01abcd" + b"\x0a\x01p"
    assert decode_stat(payload).pod_name == "p"


@pytest.mark.parametrize(
    "payload",
    [b"\x0a\x05po", b"\x11\x00\x00", b"\x38\xff\xff", b"\x0f", b"\x00\x01", b"\x0a\x02\xff\xfe"],
)
def test_corrupt_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_stat(payload)


def test_typical_stat_fits_the_scrape_limit() -> None:
    name = "x" * 253  # the longest Kubernetes pod name
    stat = Stat(name, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert len(encode_stat(stat)) <= MAX_SCRAPED_STAT_BYTES


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    st.text(max_size=40),
    finite,
    finite,
    finite,
    finite,
    finite,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_round_trip(name: str, a: float, b: float, c: float, e: float, f: float, ts: int) -> None:
    stat = Stat(name, a, b, c, e, f, ts)
    decoded = decode_stat(encode_stat(stat))
    # -0.0 is a zero scalar: omitted on the wire, decoded as 0.0 (as in Go).
    assert decoded == Stat(name, a or 0.0, b or 0.0, c or 0.0, e or 0.0, f or 0.0, ts)
