"""The per-request tracing interface the hot-path handlers see (proxy/handler.py,
activator/handler.py). Protocols only: importing this loads no OpenTelemetry package, and a
handler with tracing off holds `None` and pays one attribute check per request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from sluice.http.server import HttpExchange

__all__ = ["TRACE_HEADERS", "RequestSpan", "RequestTracer"]

# Propagation headers (W3C trace context and B3, single and multi) replaced on the forwarded
# request by the ones of our own span, so the next hop's spans hang under it (§2.10).
TRACE_HEADERS = frozenset(
    {
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    }
)


class RequestSpan(Protocol):
    """One request's server span."""

    @property
    def propagation(self) -> bytes:
        """Header lines (`Name: value\\r\\n`) carrying this span's context to the next hop."""
        ...

    @property
    def trace_id(self) -> str:
        """32 lowercase hex digits: the request log's `{{.TraceID}}` (§2.10)."""
        ...

    def wait_done(self) -> None:
        """Records the wait span (breaker §2.7 / throttler §3.5) from the request's start to now."""
        ...

    def end(self, status: int) -> None: ...


class RequestTracer(Protocol):
    def start(self, ex: HttpExchange, revision: Mapping[str, str] | None = None) -> RequestSpan:
        """`revision`: attributes naming the request's revision, for a component that serves many
        (the activator); the queue-proxy's are fixed when its tracer is made."""
        ...
