"""Websocket frame boundaries in a tunnelled byte stream (RFC 6455 §5.2), and close frames.

A proxy that tunnels a websocket after the 101 sees only bytes. To end such a tunnel cleanly
(the revision timeout, a drain: CONTRACT.md §2.8, §2.11) it must send a Close frame to each
side, and a frame may only go between two frames, never inside one. `FrameCursor` follows
one direction's frame headers and payload lengths (no payload is looked at, no unmasking) so
the proxy knows where the next boundary is.
"""

from __future__ import annotations

import os

__all__ = ["GOING_AWAY", "FrameCursor", "close_frame"]

GOING_AWAY = 1001  # RFC 6455 §7.4.1: "an endpoint is going away, such as a server going down"

_MAX_HEAD = 14  # 2 + 8 (64-bit length) + 4 (mask)


def _head_length(head: bytes) -> int:
    """Bytes of the frame header starting `head` (at least 2 of them known)."""
    short = head[1] & 0x7F
    extended = 2 if short == 126 else 8 if short == 127 else 0
    return 2 + extended + (4 if head[1] & 0x80 else 0)


def _payload_length(head: bytes) -> int:
    short = head[1] & 0x7F
    if short == 126:
        return int.from_bytes(head[2:4], "big")
    if short == 127:
        return int.from_bytes(head[2:10], "big")
    return short


class FrameCursor:
    """Where one direction of a websocket stands: between frames, or inside one."""

    __slots__ = ("_head", "_left")

    def __init__(self) -> None:
        self._head = b""  # a frame header seen only in part so far
        self._left = 0  # payload bytes of the current frame still to come

    @property
    def at_boundary(self) -> bool:
        return self._left == 0 and not self._head

    def feed(self, data: bytes, stop_at_boundary: bool = False) -> int:
        """Advances over `data`; returns len(data). With `stop_at_boundary`, advances only to
        the first frame boundary in `data` (offset 0 if already at one) and returns that
        offset, or -1 after consuming all of `data` without reaching one."""
        i = 0
        n = len(data)
        while True:
            if stop_at_boundary and self._left == 0 and not self._head:
                return i
            if i >= n:
                return -1 if stop_at_boundary else n
            if self._left:
                step = min(self._left, n - i)
                self._left -= step
                i += step
                continue
            known = len(self._head)
            head = self._head + data[i : i + _MAX_HEAD - known]
            if len(head) < 2 or len(head) < _head_length(head):
                self._head = head
                i = n
                continue
            used = _head_length(head)
            i += used - known
            self._head = b""
            self._left = _payload_length(head)


def close_frame(code: int, masked: bool) -> bytes:
    """A Close frame with `code` and no reason: unmasked from a server, masked from a client
    (RFC 6455 §5.3: every client-to-server frame is masked)."""
    payload = code.to_bytes(2, "big")
    if not masked:
        return b"\x88\x02" + payload
    mask = os.urandom(4)
    return b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
