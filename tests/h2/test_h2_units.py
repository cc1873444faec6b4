"""Pure pieces of the h2 path, and the rule that the HTTP/1.1 path never loads h2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluice.http.h2client import H2StreamReset, request_fields
from sluice.http.h2conn import PREFACE
from sluice.http.h2server import _from_preface, parse_header_block
from tests.support import ROOT

FRAMES = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("split", range(1, len(PREFACE) + len(FRAMES)))
def test_preface_is_rebuilt_from_the_read_llhttp_stopped_in(split: int) -> None:
    # llhttp pauses in the read that completes the 24-byte preface; that read is either the
    # whole thing or starts with the preface's tail.
    data = PREFACE + FRAMES
    chunk = data if split >= len(PREFACE) else data[split:]
    assert _from_preface(chunk) == data


def test_malformed_preface_is_handed_to_h2_as_is() -> None:
    assert _from_preface(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").startswith(b"PRI * HTTP/2.0\r\n\r\nXX")


def test_request_head_becomes_h2_fields() -> None:
    head = (
        b"POST /svc/M?q=1 HTTP/1.1\r\nContent-Type: application/grpc\r\nX-Forwarded-For: 1.2.3.4\r\n"
        b"Host: app.example\r\nTe: trailers\r\nConnection: close\r\nContent-Length: 7\r\n\r\n"
    )
    assert request_fields(head) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"app.example"),
        (b":path", b"/svc/M?q=1"),
        (b"content-type", b"application/grpc"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"te", b"trailers"),
        (b"content-length", b"7"),
    ]
    assert request_fields(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n")[:2] == [
        (b":method", b"CONNECT"),
        (b":authority", b"a.example:443"),
    ]


def test_header_block_becomes_h2_fields_without_connection_specific_ones() -> None:
    block = b"Content-Type: text/plain\r\nX-A:  1 \r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n"
    assert parse_header_block(block) == [(b"content-type", b"text/plain"), (b"x-a", b"1")]
    assert parse_header_block(block) is parse_header_block(block)  # cached


def test_stream_reset_text_is_gos() -> None:
    assert str(H2StreamReset(3, 2)) == "stream error: stream ID 3; INTERNAL_ERROR; received from peer"
    assert "unknown error code 0x99" in str(H2StreamReset(1, 0x99))


def test_the_http1_path_does_not_load_h2() -> None:
    code = (
        "import sys, proxy.__main__, sluice.http.forward;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hpack', 'hyperframe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_http2_path_does_not_load_the_h2_libraries() -> None:
    # h2conn/h2hpack replaced h2, hpack and hyperframe on the proxy path (they stay for tests
    # and for the readiness probe's gRPC health check).
    code = (
        "import sys, proxy.__main__, sluice.http.h2server, sluice.http.h2client;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hpack', 'hyperframe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
