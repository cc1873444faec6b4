"""The activator's metrics, traces and debug view (CONTRACT.md §3.10; issue 17).

Metrics, exported as `config-observability` asks (`prometheus` on :9090, OTLP `grpc` /
`http/protobuf`), with the attributes `kn.service.name`, `kn.configuration.name`,
`kn.revision.name`, `k8s.namespace.name`:
- read from live state at collection time, so requests pay nothing for them:
  `kn.revision.request.concurrency` (the concurrency last reported to the autoscaler),
  `kn.revision.request.queued` / `.active` (the throttlers), `kn.activator.stats.conn.reachable`
  and `.errors` (the autoscaler websocket);
- recorded per request (`RequestObserver`, only when metrics are on):
  `http.server.request.duration` (otelhttp's server histogram, with `http.response.status_code`),
  `sluice.queue.wait` (time in the throttler), and `sluice.activator.cold_start`: request arrival
  with no ready pod → the first response byte from a pod, by revision (knative/serving#13459,
  #16216); the pre-1.19 `activator_request_count` / `_latencies` on opt-in.

Spans `activator_proxy` (the request) and `throttler_try` (its time in the throttler), whose
context goes to the queue-proxy. A debug endpoint shows the activator's view of every revision:
pods, capacity, queue (knative/serving#16679).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sluice.telemetry.config import ObservabilitySettings
from sluice.telemetry.instruments import COLD_START_BOUNDS, INVOCATION_DURATION_BOUNDS, queue_wait_histogram
from sluice.telemetry.legacy import LegacyRequestMetrics
from sluice.telemetry.resource import component_resource, revision_attributes

from .revision import RevKey
from .revisions import RevisionEntry, Revisions

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

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
        meter: Meter,
        revisions: Revisions,
        concurrency: Callable[[], Mapping[RevKey, float]],
        reachable: Callable[[], bool],
        conn_errors: Callable[[], int],
        legacy: LegacyRequestMetrics | None = None,
    ) -> None:
        from opentelemetry.metrics import Observation

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
        self.duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=INVOCATION_DURATION_BOUNDS,
        )  # fmt: skip
        self.queue_wait = queue_wait_histogram(meter, "throttler queue")
        self.cold_start = meter.create_histogram(
            "sluice.activator.cold_start", unit="s",
            description="Request arrival with no ready pod to the first response byte from a pod",
            explicit_bucket_boundaries_advisory=COLD_START_BOUNDS,
        )  # fmt: skip
        # Attribute dicts reused per (revision, status): the SDK keys its streams by their items.
        self._by_status: dict[tuple[RevKey, int], dict[str, Any]] = {}
        self._by_revision: dict[RevKey, dict[str, Any]] = {}

    def _revision(self, entry: RevisionEntry) -> dict[str, Any]:
        attributes = self._by_revision.get(entry.key)
        if attributes is None or attributes["kn.service.name"] != entry.info.service:
            attributes = self._by_revision[entry.key] = _attributes(entry)
        return attributes

    # ---- RequestObserver (activator/handler.py) -------------------------------------

    def on_wait_done(self, entry: RevisionEntry, seconds: float) -> None:
        self.queue_wait.record(seconds, self._revision(entry))

    def on_cold_start(self, entry: RevisionEntry, seconds: float) -> None:
        self.cold_start.record(seconds, self._revision(entry))

    def on_request_done(self, entry: RevisionEntry, status: int, seconds: float) -> None:
        key = (entry.key, status)
        attributes = self._by_status.get(key)
        if attributes is None:
            attributes = self._by_status[key] = {**self._revision(entry), "http.response.status_code": status}
        self.duration.record(seconds, attributes)
        if self.legacy is not None:
            self.legacy.observe(self._revision(entry), status, seconds)


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

            self.export = MetricsExport(settings.metrics, resource, SCOPE)
            legacy = None
            if settings.legacy_prometheus_names and settings.metrics.protocol == "prometheus":
                legacy = LegacyRequestMetrics("activator_request", pod, "activator")
                self.export.add_collector(legacy)
            self.metrics = ActivatorMetrics(self.export.meter, revisions, concurrency, reachable, conn_errors, legacy)
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
