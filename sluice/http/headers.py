"""Header rules shared by the server and client sides of the engine.

Header names arrive as bytes in whatever case the peer sent; the engine matches on
the lower-cased name and forwards the original spelling (apps behind a proxy
sometimes compare names case-sensitively, and Go's proxy would have canonicalised
them anyway, so forwarding the received spelling is the least surprising choice).
"""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = [
    "HOP_BY_HOP",
    "Header",
    "connection_tokens",
    "error_response",
    "http_date",
    "plain_response",
]

# (lower-cased name, name as received, value)
Header = tuple[bytes, bytes, bytes]

# RFC 9110 §7.6.1 plus the legacy ones Go's httputil.ReverseProxy removes
# (CONTRACT.md §2.6). `Upgrade` is re-added for upgrade handshakes.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_date_second = -1
_date_value = b""


def http_date() -> bytes:
    """The IMF-fixdate for now, recomputed at most once a second (it is on the hot path)."""
    global _date_second, _date_value
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date_second = second
        _date_value = formatdate(now, usegmt=True).encode()
    return _date_value


def connection_tokens(value: bytes) -> set[bytes]:
    """Lower-cased tokens of a Connection header: the headers it names are hop-by-hop too."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


_REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Request Entity Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"")


def plain_response(
    status: int,
    body: bytes,
    content_type: bytes | None = b"text/plain; charset=utf-8",
    extra: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response with Content-Length, ready to write."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
    if content_type is not None:
        parts.append(b"Content-Type: " + content_type + b"\r\n")
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"Date: " + http_date() + b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def error_response(status: int, message: str, close: bool = False, head_only: bool = False) -> bytes:
    """Go's `http.Error(w, msg, code)`: text/plain, nosniff, body = msg + "\\n" (CONTRACT.md conventions)."""
    return plain_response(
        status,
        message.encode() + b"\n",
        extra=((b"X-Content-Type-Options", b"nosniff"),),
        close=close,
        head_only=head_only,
    )
