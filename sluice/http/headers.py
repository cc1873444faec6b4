"""Header rules shared by the server and client sides of the engine.

Header names arrive as bytes in whatever case the peer sent; the engine matches on
the lower-cased name and forwards the original spelling (apps behind a proxy
sometimes compare names case-sensitively, and Go's proxy would have canonicalised
them anyway, so forwarding the received spelling is the least surprising choice).
"""

from __future__ import annotations

import re
import time
from typing import Protocol

__all__ = [
    "HOP_BY_HOP",
    "Header",
    "ResponseHead",
    "connection_tokens",
    "error_response",
    "http_date",
    "imf_fixdate",
    "origin_form",
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
        _date_value = imf_fixdate(second)
    return _date_value


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf_fixdate(seconds: float) -> bytes:
    """RFC 9110 §5.6.7 IMF-fixdate (`email.utils.formatdate(usegmt=True)`, without importing the
    email package: 1.5 MB of RSS in every queue-proxy, issue 19)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode()


_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*")


def origin_form(target: bytes) -> tuple[bytes, bytes] | None:
    """An absolute-form request target (`http://user@host:81/p?q`) as (authority without
    userinfo, origin-form target `/p?q`), the way Go's url.ParseRequestURI and
    URL.RequestURI() split it: the query is cut first, the authority runs to the first
    `/`, userinfo (up to the last `@`) is dropped, an empty path is `/`. None for any other
    form Go would not forward as origin-form (no `scheme://`)."""
    sep = target.find(b"://")
    if sep <= 0 or not _SCHEME.fullmatch(target, 0, sep):
        return None
    rest = target[sep + 3 :]
    query = b""
    mark = rest.find(b"?")
    if mark >= 0:
        rest, query = rest[:mark], rest[mark:]
    slash = rest.find(b"/")
    authority, path = (rest[:slash], rest[slash:]) if slash >= 0 else (rest, b"/")
    at = authority.rfind(b"@")
    if at >= 0:
        authority = authority[at + 1 :]
    return authority, path + query


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
_ORDINARY, _DATE, _LENGTH, _TE, _CONN, _UPGRADE, _HOP, _ODD = range(-1, 7)
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
_NO_TOKENS: frozenset[bytes] = frozenset()
# RFC 9110 field-name (a token) and field-value (visible ASCII, obs-text, SP, HTAB).
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

# What a response header line means, by the line's exact bytes: (kind, value, the
# Connection tokens). An app's responses repeat the same lines (Server, Content-Type,
# the same Date within a second), so most lines are one dict lookup instead of a
# find, a slice, a lower() and a lookup each. Bounded: cleared when full.
_LineInfo = tuple[int, bytes, frozenset[bytes]]
_LINE_CACHE_MAX = 4096
_line_info: dict[bytes, _LineInfo] = {}


def _classify(line: bytes) -> _LineInfo:
    colon = line.find(b":")
    if colon <= 0 or not _FIELD_NAME.fullmatch(line, 0, colon):
        return (_ODD, b"", _NO_TOKENS)  # obs-fold, a space before the colon, no name
    value = line[colon + 1 :].strip(b" \t")
    if not _FIELD_VALUE.fullmatch(value):
        return (_ODD, b"", _NO_TOKENS)
    kind = _SPECIAL.get(line[:colon].lower(), _ORDINARY)
    if kind == _LENGTH and not value.isdigit():
        return (_ODD, b"", _NO_TOKENS)
    tokens = frozenset(connection_tokens(value)) if kind == _CONN else _NO_TOKENS
    return (kind, value, tokens)


class RelayedHead(Protocol):
    """What a relay reads of a response head: a `ResponseHead` (HTTP/1.1) or an h2c
    upstream's (h2client.H2ResponseHead). A Protocol: the compiled Forwarder takes both."""

    @property
    def block(self) -> bytes: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def has_date(self) -> bool: ...
    @property
    def upgrade_lines(self) -> bytes: ...


class ResponseHead:
    """A response head as relayed: the header lines to pass on, and what framing it had.

    Built in one pass over the raw head's lines, each looked up in a cache of known
    lines (the upstream response is on every request's path; measured with
    bench/hotpath_micro.py). `plain` says the head is simple enough for the client's
    own Content-Length framing (one valid Content-Length or none, no Transfer-Encoding,
    no malformed or folded line); anything else is left to the full HTTP parser."""

    __slots__ = (
        "block",
        "chunked",
        "connection",
        "content_length",
        "has_date",
        "plain",
        "upgrade_lines",
    )

    def __init__(self, raw_block: bytes) -> None:
        self.content_length: int | None = None
        self.chunked = False
        self.has_date = False
        self.plain = True
        self.connection = _NO_TOKENS  # lower-cased Connection tokens
        self.upgrade_lines = b""  # Connection/Upgrade lines, re-sent only on a 101
        kept: list[bytes] = []
        cache = _line_info
        lengths = 0
        for line in raw_block.split(b"\r\n"):
            info = cache.get(line)
            if info is None:
                if not line:
                    continue
                info = _classify(line)
                if len(cache) >= _LINE_CACHE_MAX:
                    cache.clear()
                cache[line] = info
            kind = info[0]
            if kind == _ORDINARY:
                kept.append(line)
            elif kind == _DATE:
                self.has_date = True
                kept.append(line)
            elif kind == _LENGTH:
                lengths += 1
                self.content_length = int(info[1])
            elif kind == _TE:
                self.chunked = b"chunked" in info[1].lower()
                self.plain = False
            elif kind in (_CONN, _UPGRADE):
                self.upgrade_lines += line + b"\r\n"
                if kind == _CONN:
                    self.connection = self.connection | info[2]
            elif kind == _ODD:
                self.plain = False
                kept.append(line)
        if lengths > 1:
            self.plain = False
        if self.chunked:
            self.content_length = None
        listed = self.connection - _CONNECTION_NOOP_TOKENS
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
