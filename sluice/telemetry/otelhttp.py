"""otelhttp's server and client metrics (CONTRACT.md §2.10, §3.10), on the in-place histograms.

Knative wraps the queue-proxy's and the activator's handlers in `otelhttp.NewHandler` and their
transports in `otelhttp.NewTransport`, so both export the HTTP semantic-convention histograms:

- server: `http.server.request.duration` (s), `http.server.request.body.size` and
  `http.server.response.body.size` (By), with `http.request.method` (`_OTHER` for a method the
  conventions do not know), `url.scheme`, `server.address` / `server.port` (from Host; the port
  only when it is not the scheme's default), `network.protocol.version`,
  `http.response.status_code`, plus what the component adds (the queue-proxy's `kn.route.tag`,
  the activator's revision attributes);
- client: `http.client.request.duration` (s, until the response head, as otelhttp's transport
  measures a RoundTrip) and `http.client.request.body.size` (By), with the same request
  attributes for the upstream, and `error.type` instead of a status code when no response came.

`network.protocol.name` is left out: the conventions require it only when it is not `http`.
Buckets: otelhttp's (the duration's advisory boundaries, the SDK's defaults for sizes).

Attribute sets are cached per (method, host, version, status, extra) so a request costs a tuple,
one dict lookup and a record per histogram. A Host header is client-controlled: each histogram
keeps at most `CARDINALITY_LIMIT` series and folds the rest into one overflow series, as the
SDK's cardinality limit does.
"""

from __future__ import annotations

from sluice.http.server import HttpExchange

from .histograms import AttributeValue, HistogramStream, HotHistograms
from .instruments import INVOCATION_DURATION_BOUNDS

__all__ = ["BODY_SIZE_BOUNDS", "ClientMetrics", "ServerMetrics", "route_tag"]

# The SDK's default explicit bucket boundaries (otelhttp gives the size histograms no advice).
BODY_SIZE_BOUNDS = (
    0.0,
    5.0,
    10.0,
    25.0,
    50.0,
    75.0,
    100.0,
    250.0,
    500.0,
    750.0,
    1000.0,
    2500.0,
    5000.0,
    7500.0,
    10000.0,
)

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)  # fmt: skip

# Knative's RouteTagHandler (pkg/queue/route_tag.go): the tag header, or DEFAULT / UNDEFINED /
# DISABLED from it and the default-route header.
_TAG_HEADER = b"knative-serving-tag"
_DEFAULT_ROUTE_HEADER = b"knative-serving-default-route"


def route_tag(ex: HttpExchange) -> str:
    name = ex.header(_TAG_HEADER) or b""
    default_route = ex.header(_DEFAULT_ROUTE_HEADER) or b""
    if not name:
        return "DEFAULT" if default_route else "DISABLED"
    if default_route == b"true":
        return "UNDEFINED"
    return name.decode("latin-1")


def _method(method: bytes) -> str:
    text = method.decode("latin-1")
    return text if text in _KNOWN_METHODS else "_OTHER"


def _host_port(host: bytes, tls: bool) -> tuple[str, int]:
    """(server.address, server.port or 0 when it is the scheme's default or absent)."""
    text = host.decode("latin-1")
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        address, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    port = int(port_text) if port_text.isdigit() else 0
    return address, 0 if port == (443 if tls else 80) else port


class ServerMetrics:
    """The three otelhttp server histograms of one component."""

    def __init__(self, histograms: HotHistograms) -> None:
        self.duration = histograms.histogram(
            "http.server.request.duration", "s", "Duration of HTTP server requests.", INVOCATION_DURATION_BOUNDS
        )
        self.request_size = histograms.histogram(
            "http.server.request.body.size", "By", "Size of HTTP server request bodies.", BODY_SIZE_BOUNDS
        )
        self.response_size = histograms.histogram(
            "http.server.response.body.size", "By", "Size of HTTP server response bodies.", BODY_SIZE_BOUNDS
        )
        self._streams: dict[tuple[object, ...], tuple[HistogramStream, HistogramStream, HistogramStream]] = {}

    def record(
        self,
        ex: HttpExchange,
        status: int,
        seconds: float,
        request_bytes: int,
        extra: tuple[tuple[str, AttributeValue], ...] = (),
    ) -> None:
        """`extra`: the component's attributes (a tuple the caller keeps, so it keys the cache)."""
        transport = ex.conn.transport
        tls = transport is not None and transport.get_extra_info("sslcontext") is not None
        host = ex.header(b"host") or b""
        key = (ex.method, host, ex.version, status, tls, extra)
        streams = self._streams.get(key)
        if streams is None:
            address, port = _host_port(host, tls)
            attributes: dict[str, AttributeValue] = {
                "http.request.method": _method(ex.method),
                "url.scheme": "https" if tls else "http",
                "server.address": address,
                "network.protocol.version": ex.version.decode("latin-1"),
                "http.response.status_code": status,
                **dict(extra),
            }
            if port:
                attributes["server.port"] = port
            streams = (
                self.duration.stream(attributes),
                self.request_size.stream(attributes),
                self.response_size.stream(attributes),
            )
            if len(self._streams) < 4 * self.duration.limit:
                self._streams[key] = streams
        streams[0].record(seconds)
        streams[1].record(request_bytes)
        streams[2].record(ex.body_bytes)


class ClientMetrics:
    """otelhttp's transport histograms for the requests a component sends upstream."""

    def __init__(self, histograms: HotHistograms) -> None:
        self.duration = histograms.histogram(
            "http.client.request.duration", "s", "Duration of HTTP client requests.", INVOCATION_DURATION_BOUNDS
        )
        self.request_size = histograms.histogram(
            "http.client.request.body.size", "By", "Size of HTTP client request bodies.", BODY_SIZE_BOUNDS
        )
        self._streams: dict[tuple[object, ...], tuple[HistogramStream, HistogramStream]] = {}

    def record(
        self,
        method: bytes,
        dest: str,
        version: str,
        outcome: int | str,
        seconds: float,
        request_bytes: int,
        extra: tuple[tuple[str, AttributeValue], ...] = (),
    ) -> None:
        """`dest`: the upstream's host:port; `outcome`: the response's status code, or the
        error's type when none came."""
        key = (method, dest, version, outcome, extra)
        streams = self._streams.get(key)
        if streams is None:
            address, _, port_text = dest.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 80
            attributes: dict[str, AttributeValue] = {
                "http.request.method": _method(method),
                "url.scheme": "http",
                "server.address": address.strip("[]"),
                "server.port": port,
                "network.protocol.version": version,
                **dict(extra),
            }
            if isinstance(outcome, int):
                attributes["http.response.status_code"] = outcome
            else:
                attributes["error.type"] = outcome
            streams = (self.duration.stream(attributes), self.request_size.stream(attributes))
            if len(self._streams) < 4 * self.duration.limit:
                self._streams[key] = streams
        streams[0].record(seconds)
        streams[1].record(request_bytes)
