"""FrameCursor finds websocket frame boundaries whatever the packet boundaries (RFC 6455 §5.2)."""

from __future__ import annotations

import os

import pytest

from sluice.http.wsframes import FrameCursor, close_frame


def frame(payload: bytes, masked: bool, opcode: int = 0x2) -> bytes:
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x80 | opcode, mask_bit | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, mask_bit | 127]) + n.to_bytes(8, "big")
    if masked:
        mask = os.urandom(4)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


SIZES = (0, 1, 125, 126, 65535, 65536, 70000)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("step", [1, 3, 7, 1000, 1 << 20])
def test_boundaries_found_at_every_split(masked: bool, step: int) -> None:
    frames = [frame(bytes(n), masked) for n in SIZES]
    stream = b"".join(frames)
    ends = set()
    total = 0
    for f in frames:
        total += len(f)
        ends.add(total)
    cursor = FrameCursor()
    pos = 0
    while pos < len(stream):
        chunk = stream[pos : pos + step]
        assert cursor.feed(chunk) == len(chunk)
        pos += len(chunk)
        # Between frames exactly where a frame ended, inside one everywhere else.
        assert cursor.at_boundary == (pos in ends), pos
    assert cursor.at_boundary


@pytest.mark.parametrize("masked", [False, True])
def test_stop_at_boundary_returns_the_first_frame_end(masked: bool) -> None:
    first = frame(b"x" * 300, masked)
    second = frame(b"yy", masked)
    cursor = FrameCursor()
    assert cursor.feed(b"", stop_at_boundary=True) == 0  # already between frames
    cursor.feed(first[:10])
    assert cursor.feed(first[10:] + second, stop_at_boundary=True) == len(first) - 10
    assert cursor.at_boundary
    cursor.feed(second[:1])
    assert cursor.feed(second[1:2], stop_at_boundary=True) == -1  # header still incomplete
    assert not cursor.at_boundary


def test_close_frames_carry_the_code() -> None:
    assert close_frame(1001, masked=False) == b"\x88\x02\x03\xe9"
    masked = close_frame(1001, masked=True)
    assert masked[:2] == b"\x88\x82" and len(masked) == 8
    mask = masked[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked[6:])) == b"\x03\xe9"
    cursor = FrameCursor()
    assert cursor.feed(masked) == len(masked) and cursor.at_boundary
