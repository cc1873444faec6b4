"""Request logs (CONTRACT.md §2.10): a Go `text/template` subset over Go-shaped request data.

Knative's QP writes one line per request to stdout by executing the user's
`logging.request-log-template` (a Go text/template) over `.Request` (a Go *http.Request),
`.Response`, `.Revision` and `.TraceID` (`pkg/http/request_log.go`). This module emulates the
part of text/template that request-log templates use:

* actions `{{pipeline}}`, trim markers `{{- ` / ` -}}`, comments `{{/* */}}`;
* `if` / `else if` / `else` / `with` / `range` / `end`, variables (`$`, `$x := ...`);
* field chains `.A.B`, niladic methods (`.Request.UserAgent`), methods with arguments
  (`.Request.Header.Get "X"`), map keys (`.Request.Header.Accept`), parenthesised pipelines;
* literals: strings ("..." with Go escapes, raw `...`), numbers, chars, true/false/nil;
* functions: js html urlquery print printf println index len and or not eq ne lt le gt ge.

Go's printing rules are reproduced for the values that occur here (ints, float64 via `%v`,
[]string, maps, structs), as are `js` escaping (`text/template.JSEscape`) and the fallback line
written when execution fails. Unsupported constructs (`define`, `template`, `block`, `=`
assignment, `break`/`continue`) are rejected at start-up with a ValueError naming the template.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus, unquote

# Knative's default template lives with the config that defaults to it, so the default path
# (no request log) does not import this module (issue 19).
from proxy.observability import DEFAULT_REQUEST_LOG_TEMPLATE

__all__ = [
    "DEFAULT_REQUEST_LOG_TEMPLATE",
    "RequestLogInput",
    "RequestLogRevision",
    "RequestLogTemplate",
    "canonical_header_key",
    "extract_trace_id",
    "go_float",
    "js_escape",
]

HeaderPairs = Sequence[tuple[str | bytes, str | bytes]]


def _s(v: str | bytes) -> str:
    # Go strings are bytes: undecodable bytes must survive to the output unchanged, so bytes are
    # decoded with surrogateescape and `RequestLogTemplate.render_bytes` re-encodes the same way.
    return v if isinstance(v, str) else v.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class RequestLogRevision:
    """`RequestLogRevision`: static per process (from SERVING_* env, §2.1)."""

    name: str = ""
    namespace: str = ""
    service: str = ""
    configuration: str = ""
    pod_name: str = ""
    pod_ip: str = ""


@dataclass(slots=True)
class RequestLogInput:
    """What the handler fills after each request (`RequestLogTemplateInput`).

    `headers` are the request headers as received (names in any case, repeated names allowed,
    str or bytes); `content_length` follows Go: the Content-Length value, 0 without a body,
    -1 when unknown (chunked). If the handler failed, pass code 500 and size 0 (§2.10).
    """

    method: str
    request_uri: str
    proto: str = "HTTP/1.1"
    host: str = ""
    remote_addr: str = ""
    content_length: int = 0
    headers: HeaderPairs = ()
    code: int = 200
    size: int = 0
    latency: float = 0.0
    revision: RequestLogRevision = field(default_factory=RequestLogRevision)
    # The queue-proxy span's trace id when tracing is on, so `{{.TraceID}}` names the trace the
    # request really is in (§2.10), also when the request arrived without trace headers.
    trace_id: str = ""


def canonical_header_key(key: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey ("x-b3-traceid" → "X-B3-Traceid")."""
    if not _TOKEN_RE.fullmatch(key):
        return key  # Go leaves keys with non-token bytes alone
    return "-".join(p[:1].upper() + p[1:].lower() for p in key.split("-"))


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_map(pairs: HeaderPairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        key = canonical_header_key(_s(k))
        if key == "Host":
            continue  # Go's server moves Host out of Header into Request.Host
        out.setdefault(key, []).append(_s(v))
    return out


def extract_trace_id(headers: dict[str, list[str]]) -> str:
    """`.TraceID`: 2nd dash-separated field of `traceparent`, else `X-B3-Traceid`, else "" (§2.10)."""
    tp = headers.get("Traceparent")
    if tp and tp[0]:
        parts = tp[0].split("-")
        if len(parts) >= 2:
            return parts[1]
    b3 = headers.get("X-B3-Traceid")
    return b3[0] if b3 else ""


# --------------------------------------------------------------------------- Go-shaped views


class _ExecError(Exception):
    pass


class _GoObject:
    """A Go value with fields/methods reachable from a template."""

    __slots__ = ()
    type_name = "struct"
    FIELDS: dict[str, Callable[[Any], Any]] = {}
    METHODS: dict[str, Callable[..., Any]] = {}

    def go_field(self, name: str) -> Any:
        getter = self.FIELDS.get(name)
        if getter is None:
            raise _ExecError(f"can't evaluate field {name} in type {self.type_name}")
        return getter(self)

    def go_string(self) -> str:
        raise _ExecError(f"printing a value of type {self.type_name} is not supported")


class GoHeader(_GoObject):
    """http.Header: map[string][]string with canonical keys."""

    __slots__ = ("map",)
    type_name = "http.Header"

    def __init__(self, mapping: dict[str, list[str]]) -> None:
        self.map = mapping

    def get(self, key: str) -> str:
        v = self.map.get(canonical_header_key(key))
        return v[0] if v else ""

    def values(self, key: str) -> list[str]:
        return self.map.get(canonical_header_key(key)) or []

    METHODS = {"Get": get, "Values": values}

    def go_field(self, name: str) -> Any:
        # text/template: `.Key` on a map is a key lookup; a missing key yields the zero value.
        return self.map.get(name) or []

    def go_string(self) -> str:
        return _print_map(self.map)


class _URLView(_GoObject):
    __slots__ = ("_uri",)
    type_name = "*url.URL"

    def __init__(self, uri: str) -> None:
        self._uri = uri

    def _parts(self) -> tuple[str, str, str, str]:
        uri = self._uri
        scheme = host = ""
        if "://" in uri and not uri.startswith("/"):
            scheme, rest = uri.split("://", 1)
            host, slash, uri = rest.partition("/")
            uri = slash + uri
        path, _, query = uri.partition("?")
        return scheme, host, path, query

    def string(self) -> str:
        # Go re-serialises the parsed URL; for request targets this is the target itself.
        return self._uri

    METHODS = {"String": string}
    FIELDS = {
        "Scheme": lambda s: s._parts()[0],
        "Host": lambda s: s._parts()[1],
        "Path": lambda s: _unquote(s._parts()[2]),
        "RawPath": lambda s: "",
        "RawQuery": lambda s: s._parts()[3],
        "Fragment": lambda s: "",
    }

    def go_string(self) -> str:
        return self._uri


def _unquote(path: str) -> str:
    return unquote(path, errors="surrogateescape")


class _RequestView(_GoObject):
    __slots__ = ("_header", "_in")
    type_name = "*http.Request"

    def __init__(self, inp: RequestLogInput, header: GoHeader) -> None:
        self._in = inp
        self._header = header

    def user_agent(self) -> str:
        return self._header.get("User-Agent")

    def referer(self) -> str:
        return self._header.get("Referer")

    METHODS = {"UserAgent": user_agent, "Referer": referer}
    FIELDS = {
        "Method": lambda s: s._in.method,
        "RequestURI": lambda s: s._in.request_uri,
        "URL": lambda s: _URLView(s._in.request_uri),
        "Proto": lambda s: s._in.proto,
        "ProtoMajor": lambda s: _proto_version(s._in.proto)[0],
        "ProtoMinor": lambda s: _proto_version(s._in.proto)[1],
        "Header": lambda s: s._header,
        "ContentLength": lambda s: s._in.content_length,
        "Host": lambda s: s._in.host,
        "RemoteAddr": lambda s: s._in.remote_addr,
    }


def _proto_version(proto: str) -> tuple[int, int]:
    m = re.fullmatch(r"HTTP/(\d+)(?:\.(\d+))?", proto)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


class _ResponseView(_GoObject):
    __slots__ = ("_in",)
    type_name = "*http.RequestLogResponse"

    def __init__(self, inp: RequestLogInput) -> None:
        self._in = inp

    FIELDS = {"Code": lambda s: s._in.code, "Size": lambda s: s._in.size, "Latency": lambda s: s._in.latency}

    def go_string(self) -> str:
        return f"{{{self._in.code} {self._in.size} {go_float(self._in.latency)}}}"


class _RevisionView(_GoObject):
    __slots__ = ("_rev",)
    type_name = "*http.RequestLogRevision"

    def __init__(self, rev: RequestLogRevision) -> None:
        self._rev = rev

    FIELDS = {
        "Name": lambda s: s._rev.name,
        "Namespace": lambda s: s._rev.namespace,
        "Service": lambda s: s._rev.service,
        "Configuration": lambda s: s._rev.configuration,
        "PodName": lambda s: s._rev.pod_name,
        "PodIP": lambda s: s._rev.pod_ip,
    }

    def go_string(self) -> str:
        r = self._rev
        return "{" + " ".join((r.name, r.namespace, r.service, r.configuration, r.pod_name, r.pod_ip)) + "}"


class _RootView(_GoObject):
    # Views are built once per render: templates reach .Request many times per line.
    __slots__ = ("_header", "_request", "_response", "_revision", "_trace_id")
    type_name = "*http.RequestLogTemplateInput"

    def __init__(self, inp: RequestLogInput) -> None:
        self._header = GoHeader(_header_map(inp.headers))
        self._request = _RequestView(inp, self._header)
        self._response = _ResponseView(inp)
        self._revision = _RevisionView(inp.revision)
        self._trace_id = inp.trace_id

    FIELDS = {
        "Request": lambda s: s._request,
        "Response": lambda s: s._response,
        "Revision": lambda s: s._revision,
        "TraceID": lambda s: s._trace_id or extract_trace_id(s._header.map),
    }


# --------------------------------------------------------------------------- Go printing


def go_float(f: float) -> str:
    """fmt's `%v` of a float64 (strconv 'g', shortest): e.g. 0.0012, 1e-05, 1.234567e+06.

    Go switches to the exponent form when the decimal exponent is < -4 or >= 6 (`ftoa.go`:
    "if precision was the shortest possible, use precision 6 for this decision"); Python's
    repr switches at 16, so only the shortest digits are taken from repr.
    """
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    _, digit_tuple, exponent = Decimal(repr(abs(f))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    dp = len(digits) + exponent  # position of the decimal point relative to the first digit
    neg = "-" if f < 0 else ""
    x = dp - 1
    if x < -4 or x >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return neg + digits + "0" * (dp - len(digits))
    return f"{neg}{digits[:dp]}.{digits[dp:]}"


def _print(v: Any) -> str:
    """fmt.Sprint of one value, as text/template prints it."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if v is None:
        return "<no value>"
    if isinstance(v, list):
        return "[" + " ".join(_print(x) for x in v) + "]"
    if isinstance(v, dict):
        return _print_map(v)
    if isinstance(v, _GoObject):
        return v.go_string()
    raise _ExecError(f"can't print value of type {type(v).__name__}")


def _print_map(m: dict[str, Any]) -> str:
    return "map[" + " ".join(f"{k}:{_print(m[k])}" for k in sorted(m)) + "]"


def _sprint(args: Sequence[Any]) -> str:
    # fmt.Sprint: a space between operands when neither side is a string.
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_print(a))
    return "".join(out)


def _eval_args(args: Sequence[Any]) -> str:
    # text/template evalArgs: a lone string is used as is, otherwise fmt.Sprint.
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(args)


def _go_type(v: Any) -> str:
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, list):
        return "[]string"
    if isinstance(v, _GoObject):
        return v.type_name
    return "<nil>" if v is None else type(v).__name__


# --------------------------------------------------------------------------- escapers


_JS_ASCII = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}
_JS_SPECIAL_RE = re.compile(r"[\\'\"<>&=\x00-\x1f]|[^\x00-\x7f]")


def _js_repl(m: re.Match[str]) -> str:
    c = m.group()
    esc = _JS_ASCII.get(c)
    if esc is not None:
        return esc
    o = ord(c)
    if o < 0x20:
        return f"\\u00{o:02X}"
    # Non-ASCII: printable runes are kept; others become \uXXXX (Go: "\\u%04X" of the rune).
    # Lone surrogates stand for undecodable bytes, which Go writes through unchanged.
    if c.isprintable() or 0xDC80 <= o <= 0xDCFF:
        return c
    return f"\\u{o:04X}"


def js_escape(s: str) -> str:
    """text/template's JSEscapeString (Go ≥ 1.x: also escapes `&` and `=`)."""
    return _JS_SPECIAL_RE.sub(_js_repl, s)


def _html_escape(s: str) -> str:
    # text/template HTMLEscapeString.
    return (
        s.replace("&", "&amp;")
        .replace("'", "&#39;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("\x00", "\ufffd")
    )


def _urlquery(s: str) -> str:
    return quote_plus(s.encode("utf-8", "surrogateescape"), safe="")


def _go_quote(s: str) -> str:
    # strconv.Quote (used by %q): Go escapes, printable runes kept.
    out = ['"']
    for c in s:
        o = ord(c)
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif c in _GO_CTRL:
            out.append(_GO_CTRL[c])
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")  # an undecodable byte
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x80 or c.isprintable():
            out.append(c)
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


_GO_CTRL = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


# --------------------------------------------------------------------------- printf

_VERB_RE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def _printf(fmt: str, args: Sequence[Any]) -> str:
    """fmt.Sprintf for the common verbs (%s %d %v %q %f %e %g %x %X %t %c %%), flags,
    width and precision; Go's in-band error forms (`%!d(string=x)`, `%!s(MISSING)`,
    `%!(EXTRA ...)`) for mismatches."""
    out: list[str] = []
    argi = 0
    pos = 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        out.append(_format_one(arg, flags, width, prec, verb))
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join(f"{_go_type(a)}={_print(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _pad(text: str, flags: str, width: str | None, numeric: bool = False) -> str:
    if not width or len(text) >= int(width):
        return text
    w = int(width)
    if "-" in flags:
        return text.ljust(w)
    if "0" in flags and numeric:
        sign = text[0] if text[:1] in "+-" else ""
        return sign + text[len(sign) :].rjust(w - len(sign), "0")
    return text.rjust(w)


def _format_one(arg: Any, flags: str, width: str | None, prec: str | None, verb: str) -> str:
    bad = f"%!{verb}({_go_type(arg)}={_print(arg)})"
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v":
        return _pad(_print(arg), flags, width)
    if verb == "s":
        if isinstance(arg, (str, list, dict, _GoObject)):
            text = _print(arg)
            if prec is not None:
                text = text[: int(prec or 0)]
            return _pad(text, flags, width)
        return bad
    if verb == "q":
        if isinstance(arg, str):
            return _pad(_go_quote(arg), flags, width)
        if is_int:
            return _pad("'" + chr(arg) + "'", flags, width)
        return bad
    if verb == "t":
        return _pad("true" if arg else "false", flags, width) if isinstance(arg, bool) else bad
    if verb == "c":
        return _pad(chr(arg), flags, width) if is_int else bad
    if verb in "dxXob":
        if is_int:
            sign = "-" if arg < 0 else ("+" if "+" in flags else "")
            body = format(abs(arg), "d" if verb == "d" else verb)
            if "#" in flags and verb in "xX":
                body = "0" + verb + body
            return _pad(sign + body, flags, width, numeric=True)
        if verb in "xX" and isinstance(arg, str):
            h = arg.encode("utf-8", "surrogateescape").hex()
            return _pad(h.upper() if verb == "X" else h, flags, width)
        return bad
    if verb in "feEgGF":
        if not isinstance(arg, float):
            return bad
        if verb in "gG" and prec is None:
            text = go_float(arg)
            text = text.upper() if verb == "G" else text
        else:
            spec = ("+" if "+" in flags else "") + "." + str(int(prec or 0) if prec is not None else 6)
            text = format(arg, spec + verb.lower() if verb != "F" else spec + "f")
            if verb in "EG":
                text = text.upper()
        return _pad(text, flags, width, numeric=True)
    return f"%!{verb}({_go_type(arg)}={_print(arg)})"


# --------------------------------------------------------------------------- functions


def _truth(v: Any) -> bool:
    # text/template isTrue: zero values and empty collections are false; structs are true.
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, dict)):
        return bool(v)
    if isinstance(v, GoHeader):
        return bool(v.map)
    return True


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, GoHeader):
            if not isinstance(k, str):
                raise _ExecError(f"index of http.Header with key of type {_go_type(k)}")
            item = item.map.get(k) or []
        elif isinstance(item, dict):
            item = item.get(k)
        elif isinstance(item, (list, str)):
            if isinstance(k, bool) or not isinstance(k, int):
                raise _ExecError(f"cannot index slice/array with type {_go_type(k)}")
            if not 0 <= k < len(item):
                raise _ExecError(f"error calling index: index out of range: {k}")
            item = item[k] if isinstance(item, list) else item.encode("utf-8", "surrogateescape")[k]
        else:
            raise _ExecError(f"can't index item of type {_go_type(item)}")
    return item


def _len(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogateescape"))  # Go: bytes, not runes
    if isinstance(item, (list, dict)):
        return len(item)
    if isinstance(item, GoHeader):
        return len(item.map)
    raise _ExecError(f"error calling len: len of type {_go_type(item)}")


def _basic(v: Any) -> tuple[str, Any]:
    if isinstance(v, bool):
        return "bool", v
    if isinstance(v, int):
        return "int", v
    if isinstance(v, float):
        return "float", v
    if isinstance(v, str):
        return "string", v
    raise _ExecError(f"invalid type for comparison: {_go_type(v)}")


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise _ExecError("missing argument for comparison")
    ka, va = _basic(a)
    for b in bs:
        kb, vb = _basic(b)
        if ka != kb:
            raise _ExecError("incompatible types for comparison")
        if va == vb:
            return True
    return False


def _lt(a: Any, b: Any) -> bool:
    ka, va = _basic(a)
    kb, vb = _basic(b)
    if ka != kb or ka == "bool":
        raise _ExecError("incompatible types for comparison")
    return bool(va < vb)


def _and(*args: Any) -> Any:
    for a in args:
        if not _truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if _truth(a):
            return a
    return args[-1]


_FUNCS: dict[str, Callable[..., Any]] = {
    "js": lambda *a: js_escape(_eval_args(a)),
    "html": lambda *a: _html_escape(_eval_args(a)),
    "urlquery": lambda *a: _urlquery(_eval_args(a)),
    "print": lambda *a: _sprint(a),
    "println": lambda *a: " ".join(_print(x) for x in a) + "\n",
    "printf": lambda fmt, *a: _printf(fmt, a) if isinstance(fmt, str) else _bad_printf(fmt),
    "index": _index,
    "len": _len,
    "and": _and,
    "or": _or,
    "not": lambda a: not _truth(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _lt,
    "le": lambda a, b: _lt(a, b) or _eq(a, b),
    "gt": lambda a, b: not (_lt(a, b) or _eq(a, b)),
    "ge": lambda a, b: not _lt(a, b),
}
_MIN_ARGS = {
    "and": 1,
    "or": 1,
    "not": 1,
    "eq": 1,
    "ne": 2,
    "lt": 2,
    "le": 2,
    "gt": 2,
    "ge": 2,
    "index": 1,
    "len": 1,
    "printf": 1,
}
_MAX_ARGS = {"not": 1, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "len": 1}


def _bad_printf(fmt: Any) -> str:
    raise _ExecError(f"wrong type for value; expected string; got {_go_type(fmt)}")


def _call_func(name: str, args: Sequence[Any]) -> Any:
    if len(args) < _MIN_ARGS.get(name, 0) or len(args) > _MAX_ARGS.get(name, len(args)):
        raise _ExecError(f"wrong number of args for {name}: got {len(args)}")
    return _FUNCS[name](*args)


# --------------------------------------------------------------------------- lexer

_KEYWORDS = {"if", "else", "end", "with", "range", "define", "template", "block", "break", "continue"}


@dataclass(slots=True)
class _Tok:
    kind: str  # field var ident str num char bool nil pipe lparen rparen decl assign comma dot
    value: Any
    space_before: bool


class _ParseError(Exception):
    pass


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_NUM_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unescape(body: str, quote: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1 : i + 2]
        if e in _ESCAPES and (e != "'" or quote == "'") and (e != '"' or quote == '"'):
            out.append(_ESCAPES[e])
            i += 2
        elif e in ("x", "u", "U"):
            n = {"x": 2, "u": 4, "U": 8}[e]
            hexs = body[i + 2 : i + 2 + n]
            if len(hexs) != n or not all(h in "0123456789abcdefABCDEF" for h in hexs):
                raise _ParseError(f"invalid escape \\{e}{hexs}")
            code = int(hexs, 16)
            # \\xNN is a byte in Go; bytes >= 0x80 are carried as surrogate escapes.
            out.append(chr(0xDC00 + code) if e == "x" and code >= 0x80 else chr(code))
            i += 2 + n
        elif e in "01234567" and e:
            octs = body[i + 1 : i + 4]
            if len(octs) != 3 or not all(o in "01234567" for o in octs):
                raise _ParseError(f"invalid escape \\{octs}")
            code = int(octs, 8)
            out.append(chr(0xDC00 + code) if code >= 0x80 else chr(code))
            i += 4
        else:
            raise _ParseError(f"invalid escape \\{e}")
    return "".join(out)


def _lex_action(text: str, pos: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of one action starting after `{{` (and its trim marker); returns the tokens, the
    position after `}}` and whether a right trim marker ` -}}` was present."""
    toks: list[_Tok] = []
    space = False
    n = len(text)
    while True:
        if pos >= n:
            raise _ParseError("unclosed action")
        c = text[pos]
        if c in " \t\r\n":
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if text.startswith("-}}", pos):
                return toks, pos + 3, True
            space = True
            continue
        if text.startswith("}}", pos):
            return toks, pos + 2, False
        start = pos
        if c == '"':
            pos += 1
            while pos < n and text[pos] != '"':
                if text[pos] == "\n":
                    raise _ParseError("unterminated quoted string")
                pos += 2 if text[pos] == "\\" else 1
            if pos >= n:
                raise _ParseError("unterminated quoted string")
            pos += 1
            toks.append(_Tok("str", _unescape(text[start + 1 : pos - 1], '"'), space))
        elif c == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise _ParseError("unterminated raw quoted string")
            pos = end + 1
            toks.append(_Tok("str", text[start + 1 : end], space))
        elif c == "'":
            end = pos + 1
            while end < n and text[end] != "'":
                end += 2 if text[end] == "\\" else 1
            if end >= n:
                raise _ParseError("unterminated character constant")
            ch = _unescape(text[pos + 1 : end], "'")
            if len(ch) != 1:
                raise _ParseError(f"malformed character constant: {text[pos : end + 1]}")
            pos = end + 1
            toks.append(_Tok("num", ord(ch), space))
        elif c == "|":
            pos += 1
            toks.append(_Tok("pipe", "|", space))
        elif c == "(":
            pos += 1
            toks.append(_Tok("lparen", "(", space))
        elif c == ")":
            pos += 1
            toks.append(_Tok("rparen", ")", space))
        elif c == ",":
            pos += 1
            toks.append(_Tok("comma", ",", space))
        elif text.startswith(":=", pos):
            pos += 2
            toks.append(_Tok("decl", ":=", space))
        elif c == "=":
            pos += 1
            toks.append(_Tok("assign", "=", space))
        elif c == "." and pos + 1 < n and (text[pos + 1].isalpha() or text[pos + 1] == "_"):
            names, pos = _lex_chain(text, pos)
            toks.append(_Tok("field", names, space))
        elif c == "." and not (pos + 1 < n and text[pos + 1].isdigit()):
            pos += 1
            toks.append(_Tok("dot", ".", space))
        elif c == "$":
            m = _IDENT_RE.match(text, pos + 1)
            pos = m.end() if m else pos + 1
            name = text[start:pos]
            chain: list[str] = []
            if text.startswith(".", pos) and pos + 1 < n and (text[pos + 1].isalpha() or text[pos + 1] == "_"):
                chain, pos = _lex_chain(text, pos)
            toks.append(_Tok("var", (name, chain), space))
        elif c.isdigit() or (c in "+-." and pos + 1 < n and (text[pos + 1].isdigit() or text[pos + 1] == ".")):
            m = _NUM_RE.match(text, pos)
            if not m or not m.group():
                raise _ParseError(f"bad number syntax: {text[pos : pos + 10]!r}")
            pos = m.end()
            toks.append(_Tok("num", _parse_number(m.group()), space))
        elif c.isalpha() or c == "_":
            m = _IDENT_RE.match(text, pos)
            assert m is not None
            pos = m.end()
            word = m.group()
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true", space))
            elif word == "nil":
                toks.append(_Tok("nil", None, space))
            else:
                toks.append(_Tok("ident", word, space))
        else:
            raise _ParseError(f"unexpected {c!r} in action")
        if pos < n and text[pos].isalnum() and toks[-1].kind in ("str", "num", "bool", "nil", "rparen"):
            raise _ParseError(f"bad character {text[pos]!r} after {toks[-1].value!r}")
        space = False


def _lex_chain(text: str, pos: int) -> tuple[list[str], int]:
    names: list[str] = []
    while text.startswith(".", pos):
        m = _IDENT_RE.match(text, pos + 1)
        if not m:
            break
        names.append(m.group())
        pos = m.end()
    return names, pos


def _parse_number(s: str) -> int | float:
    t = s.replace("_", "")
    try:
        return int(t, 0)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise _ParseError(f"bad number syntax: {s!r}") from None


# --------------------------------------------------------------------------- parser → closures

Vars = dict[str, Any]
Expr = Callable[[Any, Vars], Any]
Emit = Callable[[list[str], Any, Vars], None]


def _emit_list(emits: list[Emit]) -> Emit:
    if len(emits) == 1:
        return emits[0]

    def run(out: list[str], dot: Any, vs: Vars) -> None:
        for e in emits:
            e(out, dot, vs)

    return run


def _field_of(recv: Any, name: str, args: Sequence[Any]) -> Any:
    if isinstance(recv, _GoObject):
        method = recv.METHODS.get(name)
        if method is not None:
            return method(recv, *args)
        value = recv.go_field(name)
    elif isinstance(recv, dict):
        value = recv.get(name)
    elif recv is None:
        raise _ExecError(f"nil pointer evaluating interface {{}}.{name}")
    else:
        raise _ExecError(f"can't evaluate field {name} in type {_go_type(recv)}")
    if args:
        raise _ExecError(f"{name} has arguments but cannot be invoked as function")
    return value


def _chain(base: Expr, names: list[str]) -> Callable[[Any, Vars, Sequence[Any]], Any]:
    """Evaluate `base.N1.N2...`; the final name receives the call arguments (method call)."""
    head, last = names[:-1], names[-1]

    def run(dot: Any, vs: Vars, args: Sequence[Any]) -> Any:
        v = base(dot, vs)
        for n in head:
            v = _field_of(v, n, ())
        return _field_of(v, last, args)

    return run


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items = self._split(text)
        self.i = 0
        self.scopes: list[set[str]] = [{"$"}]

    # Split into ("text", str) and ("action", tokens) items, applying trim markers.
    @staticmethod
    def _split(text: str) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        pos = 0
        trim_next = False
        while True:
            j = text.find("{{", pos)
            chunk = text[pos:] if j < 0 else text[pos:j]
            if trim_next:
                chunk = chunk.lstrip(" \t\r\n")
            if j < 0:
                if chunk:
                    items.append(("text", chunk))
                return items
            p = j + 2
            if text[p : p + 1] == "-" and text[p + 1 : p + 2] in (" ", "\t", "\r", "\n"):
                chunk = chunk.rstrip(" \t\r\n")
                p += 1
            if chunk:
                items.append(("text", chunk))
            q = p
            while q < len(text) and text[q] in " \t\r\n":
                q += 1
            if text.startswith("/*", q):
                end = text.find("*/", q + 2)
                if end < 0:
                    raise _ParseError("unclosed comment")
                r = end + 2
                while r < len(text) and text[r] in " \t\r\n":
                    r += 1
                if text.startswith("-}}", r) and r > end + 2:
                    pos, trim_next = r + 3, True
                elif text.startswith("}}", end + 2):
                    pos, trim_next = end + 4, False
                else:
                    raise _ParseError("comment ends before closing delimiter")
                continue
            toks, pos, trim_next = _lex_action(text, p)
            items.append(("action", toks))

    def parse(self) -> Emit:
        body, term = self._list()
        if term is not None:
            raise _ParseError(f"unexpected {{{{{term[0]}}}}}")
        return body

    def _list(self) -> tuple[Emit, tuple[str, list[_Tok]] | None]:
        """Parse items until {{end}} / {{else ...}} (returned as the terminator) or EOF."""
        emits: list[Emit] = []
        while self.i < len(self.items):
            kind, val = self.items[self.i]
            self.i += 1
            if kind == "text":
                emits.append(_text_emit(val))
                continue
            toks: list[_Tok] = val
            if not toks:
                raise _ParseError("missing value for command")
            head = toks[0]
            if head.kind == "ident" and head.value in ("end", "else"):
                return _emit_list(emits) if emits else _noop, (head.value, toks[1:])
            if head.kind == "ident" and head.value in ("if", "with", "range"):
                emits.append(self._control(head.value, toks[1:]))
            elif head.kind == "ident" and head.value in _KEYWORDS:
                raise _ParseError(f"{{{{{head.value}}}}} is not supported by Sluice's request-log templates")
            else:
                emits.append(self._action(toks))
        return (_emit_list(emits) if emits else _noop), None

    def _action(self, toks: list[_Tok]) -> Emit:
        decl, pipe = self._pipeline_with_decl(toks, allow_two=False)
        if decl:
            name = decl[0]

            def declare(out: list[str], dot: Any, vs: Vars) -> None:
                vs[name] = pipe(dot, vs)

            return declare

        def emit(out: list[str], dot: Any, vs: Vars) -> None:
            out.append(_print(pipe(dot, vs)))

        return emit

    def _control(self, kind: str, toks: list[_Tok]) -> Emit:
        self.scopes.append(set())
        decl, cond = self._pipeline_with_decl(toks, allow_two=kind == "range")
        body, term = self._list()
        self.scopes.pop()
        else_body: Emit = _noop
        if term is None:
            raise _ParseError(f"unexpected EOF: missing {{{{end}}}} for {{{{{kind}}}}}")
        if term[0] == "else":
            rest = term[1]
            if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with"):
                # {{else if ...}} / {{else with ...}}: a nested control sharing our {{end}}.
                else_body = self._control(rest[0].value, rest[1:])
            else:
                if rest:
                    raise _ParseError("unexpected tokens after {{else}}")
                self.scopes.append(set())
                else_body, term2 = self._list()
                self.scopes.pop()
                if term2 is None or term2[0] != "end":
                    raise _ParseError(f"expected {{{{end}}}} for {{{{{kind}}}}}")
        elif term[1]:
            raise _ParseError("unexpected tokens after {{end}}")
        return _control_emit(kind, decl, cond, body, else_body)

    def _pipeline_with_decl(self, toks: list[_Tok], allow_two: bool) -> tuple[list[str], Expr]:
        decl: list[str] = []
        if toks and toks[0].kind == "var" and not toks[0].value[1]:
            if len(toks) > 1 and toks[1].kind == "decl":
                decl, toks = [toks[0].value[0]], toks[2:]
            elif (
                allow_two
                and len(toks) > 3
                and toks[1].kind == "comma"
                and toks[2].kind == "var"
                and toks[3].kind == "decl"
            ):
                decl, toks = [toks[0].value[0], toks[2].value[0]], toks[4:]
            elif len(toks) > 1 and toks[1].kind == "assign":
                raise _ParseError("variable assignment (=) is not supported by Sluice's request-log templates")
        if not toks:
            raise _ParseError("missing value for command")
        pipe, rest = self._pipeline(toks, 0)
        if rest != len(toks):
            raise _ParseError(f"unexpected {toks[rest].value!r} in pipeline")
        self.scopes[-1].update(decl)
        return decl, pipe

    def _pipeline(self, toks: list[_Tok], i: int) -> tuple[Expr, int]:
        cmds: list[Callable[[Any, Vars, Sequence[Any]], Any]] = []
        while True:
            cmd, i = self._command(toks, i)
            cmds.append(cmd)
            if i < len(toks) and toks[i].kind == "pipe":
                i += 1
                continue
            break
        first, rest = cmds[0], cmds[1:]

        def run(dot: Any, vs: Vars) -> Any:
            v = first(dot, vs, ())
            for c in rest:
                v = c(dot, vs, (v,))
            return v

        return run, i

    def _command(self, toks: list[_Tok], i: int) -> tuple[Callable[[Any, Vars, Sequence[Any]], Any], int]:
        operands: list[tuple[str, Any]] = []  # (kind, expr or chain-callable or func name)
        while i < len(toks) and toks[i].kind not in ("pipe", "rparen"):
            op, i = self._operand(toks, i)
            operands.append(op)
        if not operands:
            raise _ParseError("missing value for command")
        (kind0, first), args = operands[0], operands[1:]
        arg_exprs = [self._as_value(op) for op in args]
        if kind0 == "func":
            name = first

            def call(dot: Any, vs: Vars, piped: Sequence[Any]) -> Any:
                return _call_func(name, [a(dot, vs) for a in arg_exprs] + list(piped))

            return call, i
        if kind0 == "chain":
            chain = first

            def method(dot: Any, vs: Vars, piped: Sequence[Any]) -> Any:
                return chain(dot, vs, [a(dot, vs) for a in arg_exprs] + list(piped))

            return method, i
        value: Expr = first
        if args:
            raise _ParseError("can't give argument to non-function")

        def plain(dot: Any, vs: Vars, piped: Sequence[Any]) -> Any:
            if piped:
                raise _ExecError("can't give argument to non-function")
            return value(dot, vs)

        return plain, i

    @staticmethod
    def _as_value(op: tuple[str, Any]) -> Expr:
        kind, x = op
        if kind == "func":
            return lambda dot, vs: _call_func(x, [])
        if kind == "chain":
            return lambda dot, vs: x(dot, vs, ())
        expr: Expr = x
        return expr

    def _operand(self, toks: list[_Tok], i: int) -> tuple[tuple[str, Any], int]:
        t = toks[i]
        i += 1
        base: Expr
        if t.kind == "field":
            return ("chain", _chain(lambda dot, vs: dot, t.value)), i
        if t.kind == "var":
            name, names = t.value
            if not any(name in s for s in self.scopes):
                raise _ParseError(f"undefined variable {name!r}")
            base = _var_getter(name)
            if names:
                return ("chain", _chain(base, names)), i
        elif t.kind == "dot":
            base = _dot
        elif t.kind in ("str", "num", "bool", "nil"):
            base = _const(t.value)
        elif t.kind == "ident":
            if t.value not in _FUNCS:
                raise _ParseError(f'function "{t.value}" not defined')
            return ("func", t.value), i
        elif t.kind == "lparen":
            base, i = self._pipeline(toks, i)
            if i >= len(toks) or toks[i].kind != "rparen":
                raise _ParseError("unclosed left paren")
            i += 1
        else:
            raise _ParseError(f"unexpected {t.value!r} in operand")
        # `(pipeline).Field` or `$x.Field`: a field chain glued to the operand.
        if i < len(toks) and toks[i].kind == "field" and not toks[i].space_before:
            names = toks[i].value
            return ("chain", _chain(base, names)), i + 1
        return ("value", base), i


def _dot(dot: Any, vs: Vars) -> Any:
    return dot


def _const(v: Any) -> Expr:
    return lambda dot, vs: v


def _var_getter(name: str) -> Expr:
    def get(dot: Any, vs: Vars) -> Any:
        return vs[name]

    return get


def _noop(out: list[str], dot: Any, vs: Vars) -> None:
    return None


def _text_emit(s: str) -> Emit:
    def emit(out: list[str], dot: Any, vs: Vars) -> None:
        out.append(s)

    return emit


def _iterate(v: Any) -> Iterable[tuple[Any, Any]]:
    if v is None:
        return ()
    if isinstance(v, list):
        return enumerate(v)
    if isinstance(v, GoHeader):
        v = v.map
    if isinstance(v, dict):
        return ((k, v[k]) for k in sorted(v))
    if isinstance(v, int) and not isinstance(v, bool):
        return ((n, n) for n in range(v))  # Go 1.22: range over an int
    raise _ExecError(f"range can't iterate over {_print(v)}")


def _control_emit(kind: str, decl: list[str], cond: Expr, body: Emit, else_body: Emit) -> Emit:
    if kind == "range":

        def run_range(out: list[str], dot: Any, vs: Vars) -> None:
            empty = True
            for k, v in _iterate(cond(dot, vs)):
                empty = False
                inner = dict(vs)
                if len(decl) == 1:
                    inner[decl[0]] = v
                elif len(decl) == 2:
                    inner[decl[0]], inner[decl[1]] = k, v
                body(out, v, inner)
            if empty:
                else_body(out, dot, dict(vs))

        return run_range

    def run(out: list[str], dot: Any, vs: Vars) -> None:
        v = cond(dot, vs)
        inner = dict(vs)
        if decl:
            inner[decl[0]] = v
        if _truth(v):
            body(out, v if kind == "with" else dot, inner)
        else:
            else_body(out, dot, inner)

    return run


# --------------------------------------------------------------------------- public API


class RequestLogTemplate:
    """A parsed request-log template (`RequestLogHandler.SetTemplate` + `write`)."""

    __slots__ = ("_emit", "text")

    def __init__(self, text: str, emit: Emit) -> None:
        self.text = text
        self._emit = emit

    @classmethod
    def parse(cls, text: str) -> RequestLogTemplate:
        """Parse `text`; a newline is appended if missing (Go does the same, §2.10).

        Raises ValueError naming the template on a syntax error or an unknown function
        (Go's parse-time errors). Unknown *fields* are, as in Go, execution-time errors.
        """
        if not text.endswith("\n"):
            text += "\n"
        try:
            emit = _Parser(text).parse()
        except _ParseError as exc:
            raise ValueError(f"invalid request log template {text.rstrip(chr(10))!r}: {exc}") from None
        return cls(text, emit)

    def render(self, inp: RequestLogInput) -> str:
        """One log line (ending in a newline), or Go's fallback line if execution fails."""
        out: list[str] = []
        root = _RootView(inp)
        try:
            self._emit(out, root, {"$": root})
        except (_ExecError, TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError):
            return fallback_line(inp)
        return "".join(out)

    def render_bytes(self, inp: RequestLogInput) -> bytes:
        # surrogateescape restores bytes that were not valid UTF-8 on the way in (as Go would).
        return self.render(inp).encode("utf-8", "surrogateescape")


def fallback_line(inp: RequestLogInput) -> str:
    """`Invalid request log template: method: %v, response code: %v, latency: %v, url: %v\\n`."""
    return (
        f"Invalid request log template: method: {inp.method}, response code: {inp.code}, "
        f"latency: {go_float(inp.latency)}, url: {inp.request_uri}\n"
    )
