"""The per-request tracing interface the hot-path handlers see (proxy/handler.py,
activator/handler.py). Protocols only: importing this loads no OpenTelemetry package, and a
handler with tracing off holds `None` and pays one attribute check per request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from sluice.http.server import HttpExchange

__all__ = ["TRACE_HEADERS", "DoneRequest", "RequestSpan", "RequestTracer", "done_request"]

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


class DoneRequest:
    """What the observer gets of a finished request (made only when there is an observer)."""

    __slots__ = ("latency", "outcome", "queue_wait", "request_bytes", "trace_id", "upstream")

    def __init__(
        self, latency: float, queue_wait: float, trace_id: str, request_bytes: int, upstream: float, outcome: int | str
    ) -> None:
        self.latency = latency
        self.queue_wait = queue_wait
        self.trace_id = trace_id
        self.request_bytes = request_bytes  # request body bytes read from the client
        # Seconds from the grant (breaker, throttler) to the upstream's response head (or to
        # the failure); -1 when the request never went upstream. `outcome`: status or error type.
        self.upstream = upstream
        self.outcome = outcome


def done_request(
    start: float,
    granted_at: float,
    head_at: float,
    now: float,
    status: int,
    upstream_error: BaseException | None,
    sent: bool,
    trace_id: str,
    request_bytes: int,
) -> DoneRequest:
    """A finished request as its proxy saw it (times from its clock, 0 = did not happen):
    admitted at `start`, granted a slot at `granted_at`, the upstream's head at `head_at`."""
    granted = granted_at or now
    upstream = -1.0
    outcome: int | str = 0
    if head_at:
        upstream, outcome = head_at - granted, status
    elif upstream_error is not None:
        upstream, outcome = now - granted, type(upstream_error).__name__
    elif sent:
        # It went upstream and ended before any answer: its timeout fired or the client left.
        upstream, outcome = now - granted, "canceled"
    return DoneRequest(now - start, granted - start, trace_id, request_bytes, upstream, outcome)
