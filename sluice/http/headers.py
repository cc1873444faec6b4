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
    "ResponseHead",
    "connection_tokens",
    "error_response",
    "http_date",
    "plain_response",
    "split_head",
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


# The response-head lines the proxy must look at: hop-by-hop ones (dropped),
# Content-Length and Transfer-Encoding (framing is re-decided per client), Date.
_DATE, _LENGTH, _TE, _CONN, _UPGRADE, _HOP = range(6)
_SPECIAL: dict[bytes, int] = {
    b"date": _DATE,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"upgrade": _UPGRADE,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"proxy-authenticate": _HOP,
    b"proxy-authorization": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
}
_CONNECTION_NOOP_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})


class ResponseHead:
    """A response head as relayed: the header lines to pass on, and what framing it had.

    Built from the raw head in one pass over its lines instead of a Python callback
    per header from the parser (the upstream response is on every request's path;
    measured with bench/hotpath_micro.py)."""

    __slots__ = ("block", "chunked", "content_length", "has_date", "upgrade_lines")

    def __init__(self, raw_block: bytes) -> None:
        self.content_length: int | None = None
        self.chunked = False
        self.has_date = False
        self.upgrade_lines = b""  # Connection/Upgrade lines, re-sent only on a 101
        kept: list[bytes] = []
        listed: set[bytes] | None = None
        special = _SPECIAL
        for line in raw_block.split(b"\r\n"):
            if not line:
                continue
            colon = line.find(b":")
            kind = special.get(line[:colon].lower()) if colon > 0 else None
            if kind is None:
                kept.append(line)
                continue
            if kind == _DATE:
                self.has_date = True
                kept.append(line)
                continue
            value = line[colon + 1 :].strip()
            if kind == _LENGTH:
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif kind == _TE:
                self.chunked = b"chunked" in value.lower()
            elif kind in (_CONN, _UPGRADE):
                self.upgrade_lines += line + b"\r\n"
                if kind == _CONN and value.lower() not in _CONNECTION_NOOP_TOKENS:
                    extra = connection_tokens(value) - _CONNECTION_NOOP_TOKENS
                    if extra:
                        listed = (listed or set()) | extra
        if listed:
            # Rare: headers named by Connection are hop-by-hop too (RFC 9110 §7.6.1).
            kept = [line for line in kept if line[: max(0, line.find(b":"))].strip().lower() not in listed]
        kept.append(b"")
        self.block = b"\r\n".join(kept) if len(kept) > 1 else b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of a relayed header by name (a scan: not for the proxy path)."""
        lname = name.lower()
        for line in self.block.split(b"\r\n"):
            colon = line.find(b":")
            if colon > 0 and line[:colon].strip().lower() == lname:
                return line[colon + 1 :].strip()
        return None


def split_head(head: bytes) -> tuple[bytes, bytes]:
    """`HTTP/1.1 200 OK\\r\\nA: b\\r\\n` → (b"OK", b"A: b\\r\\n"): the reason and the header lines."""
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    line = head[:end]
    parts = line.split(b" ", 2)
    reason = parts[2] if len(parts) == 3 else b""
    return reason, head[end + 2 :]
