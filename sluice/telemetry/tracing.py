"""Traces (CONTRACT.md §2.10, §3.10): W3C `traceparent` and B3 read from the request and
written on the forwarded one, spans with the sampling rate from config (parent-based, as
Knative's Go tracer provider), exported over OTLP `grpc` / `http/protobuf` (or `stdout`).

OpenTelemetry is imported only when a `Tracing` is built, i.e. when `tracing-protocol` is not
`none` (§2.2: a pod with tracing off loads nothing).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sluice.http.server import HttpExchange

from .config import TraceSettings
from .hooks import TRACE_HEADERS, RequestSpan
from .metrics import grpc_target, otlp_url

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["ServerSpans", "Tracing"]


class Tracing:
    """A tracer provider with its exporter and the W3C + B3 propagators."""

    def __init__(self, settings: TraceSettings, resource: Mapping[str, str], scope: str) -> None:
        if not settings.enabled:
            raise ValueError("Tracing needs a tracing protocol other than none")
        from opentelemetry.propagators.b3 import B3MultiFormat
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.settings = settings
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create(dict(resource)),
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_rate)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings)))
        self.tracer: Tracer = self.provider.get_tracer(scope)
        # Extraction tries W3C first, then B3 (single `b3` or X-B3-*); injection writes both, as
        # Knative's composite propagator does.
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat()])

    def extract(self, ex: HttpExchange) -> Any:
        """The remote parent context of a request, or None when it carries none."""
        carrier: dict[str, str] = {}
        for lname, _name, value in ex.headers:
            if lname in TRACE_HEADERS:
                carrier[lname.decode("latin-1")] = value.decode("latin-1")
        return self.propagator.extract(carrier) if carrier else None

    def inject(self, span: Span) -> bytes:
        from opentelemetry.trace import set_span_in_context

        out: dict[str, str] = {}
        self.propagator.inject(out, context=set_span_in_context(span))
        return "".join(f"{k}: {v}\r\n" for k, v in out.items()).encode("latin-1")

    def flush(self, timeout: float = 5.0) -> bool:
        return bool(self.provider.force_flush(int(timeout * 1000)))

    def shutdown(self) -> None:
        self.provider.shutdown()


class ServerSpans:
    """`RequestTracer` for a proxying component: a server span per request (`name`), a child
    `wait_name` span for its time in the breaker / throttler, attributes naming the revision.

    A request the sampler would drop skips the SDK when its decision can be read off the request
    alone: no trace header at all (a root: TraceIdRatioBased on a fresh random trace id), or one
    W3C `traceparent` whose flags say not sampled (ParentBased follows it) and no `tracestate`.
    Such a request still propagates a context exactly as the SDK's non-recording span would (a new
    span id, the parent's trace id, `-00`/`-02` flags, B3 `x-b3-sampled: 0`), so the app's spans
    and the request log's `{{.TraceID}}` see the same trace, for ~2 µs instead of the SDK's ~40 µs
    (start_span + a propagator inject per request: bench/RESULTS.md). Anything else (B3 in,
    a sampled or unusual parent) takes the SDK.
    """

    def __init__(self, tracing: Tracing, name: str, wait_name: str, attributes: Mapping[str, str]) -> None:
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        self.tracing = tracing
        self.name = name
        self.wait_name = wait_name
        self.attributes = dict(attributes)
        self.kind = SpanKind.SERVER
        self.error = Status(StatusCode.ERROR)
        self.set_span_in_context = set_span_in_context
        # TraceIdRatioBased samples a trace id whose low 64 bits are below this bound.
        self.bound = TraceIdRatioBased.get_bound_for_rate(tracing.settings.sampling_rate)

    def start(self, ex: HttpExchange, revision: Mapping[str, str] | None = None) -> RequestSpan:
        parent: bytes | None = None
        for lname, _name, value in ex.headers:
            if lname in TRACE_HEADERS:
                if lname != b"traceparent" or parent is not None:
                    return _Span(self, ex, revision)  # B3, tracestate or a second traceparent
                parent = value
        if parent is None:
            trace_id = random.getrandbits(128)
            if trace_id & _LOW_64 < self.bound:
                return _Span(self, ex, revision)
            return _Unsampled(format(trace_id, "032x"), "02")
        # 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>: not sampled, random bit or not.
        text = parent.decode("latin-1").strip().lower()
        if len(text) == 55 and text[:3] == "00-" and text[52:] in ("-00", "-02") and _is_w3c_ids(text):
            return _Unsampled(text[3:35], text[53:])
        return _Span(self, ex, revision)


_LOW_64 = (1 << 64) - 1
_HEX = frozenset("0123456789abcdef")


def _is_w3c_ids(text: str) -> bool:
    """The trace and parent span ids of a version-00 traceparent: hex, dashes, not all zero."""
    trace_id, span_id = text[3:35], text[36:52]
    return (
        text[35] == "-"
        and _HEX.issuperset(trace_id)
        and _HEX.issuperset(span_id)
        and trace_id != "0" * 32
        and span_id != "0" * 16
    )


class _Unsampled:
    """A dropped request's span: nothing recorded or exported, its context propagated."""

    __slots__ = ("propagation", "trace_id")

    def __init__(self, trace_id: str, flags: str) -> None:
        span_id = random.getrandbits(64) or 1
        span = format(span_id, "016x")
        self.trace_id = trace_id
        self.propagation = (
            f"traceparent: 00-{trace_id}-{span}-{flags}\r\n"
            f"x-b3-traceid: {trace_id}\r\nx-b3-spanid: {span}\r\nx-b3-sampled: 0\r\n"
        ).encode("latin-1")

    def wait_done(self) -> None:
        pass

    def end(self, status: int) -> None:
        pass


class _Span:
    __slots__ = ("_propagation", "owner", "span", "started_ns")

    def __init__(self, owner: ServerSpans, ex: HttpExchange, revision: Mapping[str, str] | None) -> None:
        self.owner = owner
        self.started_ns = time.time_ns()
        attributes: dict[str, Any] = dict(owner.attributes)
        if revision:
            attributes.update(revision)
        attributes["http.request.method"] = ex.method.decode("latin-1")
        attributes["url.path"] = ex.url.partition(b"?")[0].decode("latin-1")
        self.span: Span = owner.tracing.tracer.start_span(
            owner.name,
            context=owner.tracing.extract(ex),
            kind=owner.kind,
            attributes=attributes,
            start_time=self.started_ns,
        )
        self._propagation = b""

    @property
    def propagation(self) -> bytes:
        if not self._propagation:
            self._propagation = self.owner.tracing.inject(self.span)
        return self._propagation

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def wait_done(self) -> None:
        owner = self.owner
        wait = owner.tracing.tracer.start_span(
            owner.wait_name, context=owner.set_span_in_context(self.span), start_time=self.started_ns
        )
        wait.end()

    def end(self, status: int) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self.owner.error)
        span.end()


def _span_exporter(settings: TraceSettings) -> Any:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        target, insecure = grpc_target(settings.endpoint or "localhost:4317")
        return GrpcExporter(endpoint=target, insecure=insecure)
    if settings.protocol == "stdout":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=otlp_url(settings.endpoint or "localhost:4318", "traces"))
