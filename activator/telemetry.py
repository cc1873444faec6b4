"""The activator's metrics, traces and debug view (CONTRACT.md §3.10; issue 17).

Metrics, exported as `config-observability` asks (`prometheus` on :9090, OTLP `grpc` /
`http/protobuf`), with the attributes `kn.service.name`, `kn.configuration.name`,
`kn.revision.name`, `k8s.namespace.name`:
- read from live state at collection time, so requests pay nothing for them:
  `kn.revision.request.concurrency` (the concurrency last reported to the autoscaler),
  `kn.revision.request.queued` / `.active` (the throttlers), `kn.activator.stats.conn.reachable`
  and `.errors` (the autoscaler websocket);
- recorded per request (`RequestObserver`, only when metrics are on, in place: see
  `sluice.telemetry.histograms`): otelhttp's `http.server.request.duration` /
  `.request.body.size` / `.response.body.size` and `http.client.request.duration` /
  `.request.body.size` (towards the pods; `sluice.telemetry.otelhttp`), `sluice.queue.wait`
  (time in the throttler), and `sluice.activator.cold_start`: request arrival with no ready pod →
  the first response byte from a pod, by revision (knative/serving#13459, #16216); the pre-1.19
  `activator_request_count` / `_latencies` on opt-in.

Spans `activator_proxy` (the request) and `throttler_try` (its time in the throttler), whose
context goes to the queue-proxy. A debug endpoint shows the activator's view of every revision:
pods, capacity, queue (knative/serving#16679).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sluice.http.server import HttpExchange
from sluice.telemetry.config import ObservabilitySettings
from sluice.telemetry.histograms import AttributeValue, HistogramStream
from sluice.telemetry.hooks import DoneRequest
from sluice.telemetry.instruments import COLD_START_BOUNDS, queue_wait_histogram
from sluice.telemetry.legacy import LegacyRequestMetrics
from sluice.telemetry.otelhttp import ClientMetrics, ServerMetrics
from sluice.telemetry.resource import component_resource, revision_attributes

from .revision import RevKey
from .revisions import RevisionEntry, Revisions

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from sluice.telemetry.metrics import MetricsExport
    from sluice.telemetry.tracing import ServerSpans, Tracing

__all__ = ["ActivatorMetrics", "ActivatorTelemetry", "revisions_view"]

SCOPE = "knative.dev/serving/cmd/activator"


def _attributes(entry: RevisionEntry) -> dict[str, str]:
    info = entry.info
    return revision_attributes(info.namespace, info.service, info.configuration, info.name)


class ActivatorMetrics:
    """The instruments, and the handler's `RequestObserver`."""

    def __init__(
        self,
        export: MetricsExport,
        revisions: Revisions,
        concurrency: Callable[[], Mapping[RevKey, float]],
        reachable: Callable[[], bool],
        conn_errors: Callable[[], int],
        legacy: LegacyRequestMetrics | None = None,
    ) -> None:
        from opentelemetry.metrics import Observation

        meter = export.meter
        histograms = export.histograms
        self.revisions = revisions
        self.legacy = legacy
        self._observation = Observation

        def per_revision(value: Callable[[RevisionEntry], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(value(e), _attributes(e)) for _, e in sorted(revisions.entries.items())]

            return observe

        def reported(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for key, value in sorted(concurrency().items()):
                entry = revisions.get(key)
                if entry is not None:
                    out.append(Observation(value, _attributes(entry)))
            return out

        meter.create_observable_gauge(
            "kn.revision.request.concurrency", callbacks=[reported], unit="{request}",
            description="Concurrent requests that are routed to the Activator",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            "kn.revision.request.queued", callbacks=[per_revision(lambda e: e.throttler.live_waiting)],
            unit="{request}", description="Number of requests currently queued in the throttler",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            "kn.revision.request.active", callbacks=[per_revision(lambda e: e.throttler.in_flight)],
            unit="{request}", description="Number of requests currently being proxied",
        )  # fmt: skip
        meter.create_observable_gauge(
            "kn.activator.stats.conn.reachable",
            callbacks=[lambda options: [Observation(1 if reachable() else 0)]],
            description="Whether the autoscaler is reachable from the activator (1 = yes)",
        )
        meter.create_observable_counter(
            "kn.activator.stats.conn.errors",
            callbacks=[lambda options: [Observation(conn_errors())]],
            unit="{error}",
            description="Number of errors on the stats connection to the autoscaler",
        )
        self.server = ServerMetrics(histograms)
        self.client = ClientMetrics(histograms)
        self.queue_wait = queue_wait_histogram(histograms, "throttler queue")
        self.cold_start = histograms.histogram(
            "sluice.activator.cold_start",
            "s",
            "Request arrival with no ready pod to the first response byte from a pod",
            COLD_START_BOUNDS,
        )
        # Per revision, made on its first request and refreshed when its Service label changes.
        self._by_revision: dict[RevKey, _RevisionSeries] = {}

    def _series(self, entry: RevisionEntry) -> _RevisionSeries:
        series = self._by_revision.get(entry.key)
        if series is None or series.attributes["kn.service.name"] != entry.info.service:
            series = self._by_revision[entry.key] = _RevisionSeries(self, _attributes(entry))
        return series

    # ---- RequestObserver (activator/handler.py) -------------------------------------

    def on_wait_done(self, entry: RevisionEntry, seconds: float) -> None:
        self._series(entry).queue_wait.record(seconds)

    def on_cold_start(self, entry: RevisionEntry, seconds: float) -> None:
        self._series(entry).cold_start.record(seconds)

    def on_request_done(self, entry: RevisionEntry, ex: HttpExchange, dest: str, done: DoneRequest) -> None:
        series = self._series(entry)
        status = ex.status or 500
        self.server.record(ex, status, done.latency, done.request_bytes, series.extra)
        if done.upstream >= 0:
            version = "2.0" if ex.http2 else "1.1"
            self.client.record(ex.method, dest, version, done.outcome, done.upstream, done.request_bytes, series.extra)
        if self.legacy is not None:
            self.legacy.observe(series.attributes, status, done.latency)


class _RevisionSeries:
    """A revision's attributes and its streams of the per-revision histograms."""

    __slots__ = ("attributes", "cold_start", "extra", "queue_wait")

    def __init__(self, metrics: ActivatorMetrics, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.extra: tuple[tuple[str, AttributeValue], ...] = tuple(sorted(attributes.items()))
        self.queue_wait: HistogramStream = metrics.queue_wait.stream(attributes)
        self.cold_start: HistogramStream = metrics.cold_start.stream(attributes)


def revisions_view(revisions: Revisions, concurrency: Mapping[RevKey, float]) -> dict[str, Any]:
    """`GET /debug/revisions`: what this activator believes about every revision it knows."""
    out: dict[str, Any] = {}
    for key, entry in sorted(revisions.entries.items()):
        t = entry.throttler
        assigned = {id(tr) for tr in t.assigned}
        backends, cluster_ip = revisions.backends.get(key, (frozenset(), None))
        out[f"{key[0]}/{key[1]}"] = {
            "service": entry.info.service,
            "configuration": entry.info.configuration,
            "containerConcurrency": t.cc,
            "capacity": t.capacity,
            "inFlight": t.in_flight,
            "queued": t.live_waiting,
            "queueDepth": t.queue_depth,
            "readyBackends": sorted(backends),
            "clusterIP": cluster_ip,
            "routingViaClusterIP": t.cluster_ip is not None,
            "activators": {"count": t.num_activators, "index": t.activator_index},
            "pods": [
                {
                    "dest": tr.dest,
                    "inFlight": tr.in_flight,
                    "capacity": tr.capacity,
                    "assignedToThisActivator": id(tr) in assigned,
                }
                for tr in sorted(t.trackers.values(), key=lambda tr: tr.dest)
            ],
            "reportedConcurrency": concurrency.get(key),
        }
    return out


class ActivatorTelemetry:
    """Everything `config-observability` turned on; None-valued parts are off and unloaded."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        revisions: Revisions,
        concurrency: Callable[[], Mapping[RevKey, float]],
        reachable: Callable[[], bool],
        conn_errors: Callable[[], int],
        namespace: str,
        pod: str,
        environ: Mapping[str, str],
    ) -> None:
        resource = component_resource("activator", namespace, pod, environ, default_service_name="activator")
        self.export: MetricsExport | None = None
        self.metrics: ActivatorMetrics | None = None
        if settings.metrics.enabled:
            from sluice.telemetry.metrics import MetricsExport

            self.export = MetricsExport(settings.metrics, resource, SCOPE, environ=environ)
            legacy = None
            if settings.legacy_prometheus_names and settings.metrics.protocol == "prometheus":
                legacy = LegacyRequestMetrics("activator_request", pod, "activator")
                self.export.add_collector(legacy)
            self.metrics = ActivatorMetrics(self.export, revisions, concurrency, reachable, conn_errors, legacy)
        self.tracing: Tracing | None = None
        self.tracer: ServerSpans | None = None
        if settings.tracing.enabled:
            from sluice.telemetry.tracing import ServerSpans, Tracing

            self.tracing = Tracing(settings.tracing, resource, SCOPE)
            self.tracer = ServerSpans(self.tracing, "activator_proxy", "throttler_try", {})

    def shutdown(self) -> None:
        if self.export is not None:
            self.export.shutdown()
        if self.tracing is not None:
            self.tracing.shutdown()
