"""The autoscaler explains itself (CONTRACT.md §4.7; issue 17): the decider gauges per revision,
exported as `config-observability` asks, and a loopback debug endpoint returning each revision's
windows, last decision and why, as JSON.

Gauges are observed at collection time from each decider's last valid evaluation
(`scaling.Autoscaler.last`), with the names, units and attributes of Knative's
`pkg/autoscaler/scaling/metrics.go` (scope `knative.dev/serving/pkg/autoscaler`): only the
stable/panic/target gauges of the revision's scaling metric are observed, as in Go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sluice.telemetry.config import ObservabilitySettings, missing_extra
from sluice.telemetry.resource import component_resource, revision_attributes

from .annotations import CONCURRENCY, RPS
from .collector import MetricCollector
from .decision import Decision
from .podaccessor import PodCounts
from .scaling import DeciderGauges, MultiScaler, NoDataError, NotCollectingError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from sluice.telemetry.metrics import MetricsExport

    from .app import AutoscalerApp, Options

__all__ = ["DEFAULT_DEBUG_PORT", "DEFAULT_METRICS_PORT", "AutoscalerTelemetry", "explain"]

logger = logging.getLogger("autoscaler")

SCOPE = "knative.dev/serving/pkg/autoscaler"
DEFAULT_METRICS_PORT = 9090  # Knative's autoscaler metrics port (`prometheus` with no endpoint)
DEFAULT_DEBUG_PORT = 8099

SERVING_SERVICE_LABEL = "serving.knative.dev/service"
SERVING_CONFIGURATION_LABEL = "serving.knative.dev/configuration"

# (name, unit, description, value of the decider's gauges, which scaling metric it belongs to or
# None). The values are the decider's own `DeciderGauges`, recorded as Go records them (§4.7).
_GAUGES: tuple[tuple[str, str, str, Callable[[DeciderGauges], float], str | None], ...] = (
    ("kn.revision.pods.desired", "{item}", "Number of pods the autoscaler wants to allocate",
     lambda g: g.desired_pods, None),
    ("kn.revision.capacity.excess", "{concurrency}", "Excess burst capacity observed over the stable window",
     lambda g: g.excess_burst_capacity, None),
    ("kn.revision.panic.mode", "", "If greater than 0 the autoscaler is in panic mode",
     lambda g: g.panic_mode, None),
    ("kn.revision.concurrency.stable", "{concurrency}",
     "Average of request count per observed pod over the stable window", lambda g: g.stable, CONCURRENCY),
    ("kn.revision.concurrency.panic", "{concurrency}",
     "Average of request count per observed pod over the panic window", lambda g: g.panic, CONCURRENCY),
    ("kn.revision.concurrency.target", "{concurrency}", "The desired concurrent requests for each pod",
     lambda g: g.target, CONCURRENCY),
    ("kn.revision.rps.stable", "{request}/s",
     "Average of requests-per-second per observed pod over the stable window", lambda g: g.stable, RPS),
    ("kn.revision.rps.panic", "{request}/s",
     "Average of requests-per-second per observed pod over the panic window", lambda g: g.panic, RPS),
    ("kn.revision.rps.target", "{request}/s", "The desired requests-per-second for each pod",
     lambda g: g.target, RPS),
)  # fmt: skip


# The KPA reconciler's pod counts per revision, as kpa.go's reportMetrics records them after each
# reconcile: (name, description, value of (want, PodCounts)).
_POD_GAUGES: tuple[tuple[str, str, Callable[[int, PodCounts], int]], ...] = (
    ("kn.revision.pods.requested", "Number of pods the autoscaler requested from Kubernetes", lambda w, c: w),
    ("kn.revision.pods.count", "Number of pods that are ready", lambda w, c: c.ready),
    ("kn.revision.pods.not_ready.count", "Number of pods that are not ready", lambda w, c: c.not_ready),
    ("kn.revision.pods.pending.count", "Number of pods that are pending", lambda w, c: c.pending),
    ("kn.revision.pods.terminating.count", "Number of pods that are terminating", lambda w, c: c.terminating),
)


class AutoscalerTelemetry:
    def __init__(
        self,
        settings: ObservabilitySettings,
        multiscaler: MultiScaler,
        collector: MetricCollector,
        labels_of: Callable[[str], Mapping[str, str]],
        namespace: str,
        pod: str,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        pod_report: Callable[[], Mapping[str, tuple[int, PodCounts]]] = dict,
    ) -> None:
        self.multiscaler = multiscaler
        self.pod_report = pod_report
        self.collector = collector
        self.labels_of = labels_of
        self.clock = clock
        self.export: MetricsExport | None = None
        if settings.metrics.enabled:
            from sluice.telemetry.metrics import MetricsExport

            resource = component_resource("autoscaler", namespace, pod, environ, default_service_name="autoscaler")
            self.export = MetricsExport(settings.metrics, resource, SCOPE)
            meter = self.export.meter
            for name, unit, description, value, metric in _GAUGES:
                meter.create_observable_gauge(
                    name, callbacks=[self._callback(value, metric)], unit=unit, description=description
                )
            for name, description, pick in _POD_GAUGES:
                meter.create_observable_gauge(
                    name, callbacks=[self._pods_callback(pick)], unit="{item}", description=description
                )
            scrape = meter.create_histogram(
                "kn.autoscaler.scrape.duration", unit="s", description="The time to scrape metrics from the pods"
            )
            collector.scrape_observer = lambda key, seconds: scrape.record(seconds, self.attributes(key))

    def attributes(self, key: str) -> dict[str, str]:
        ns, _, name = key.partition("/")
        labels = self.labels_of(key)
        return revision_attributes(
            ns, labels.get(SERVING_SERVICE_LABEL, ""), labels.get(SERVING_CONFIGURATION_LABEL, ""), name
        )

    def _callback(
        self, value: Callable[[DeciderGauges], float], metric: str | None
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            return [
                Observation(value(gauges), self.attributes(key))
                for key, gauges in self.multiscaler.all_gauges().items()
                if metric is None or gauges.scaling_metric == metric
            ]

        return observe

    def _pods_callback(
        self, pick: Callable[[int, PodCounts], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            return [
                Observation(pick(want, counts), self.attributes(key))
                for key, (want, counts) in list(self.pod_report().items())
            ]

        return observe

    def debug(self) -> dict[str, Any]:
        """`GET /debug/revisions`: every revision's windows, last decision and why."""
        return {key: explain(self, key, decision) for key, decision in sorted(self.multiscaler.decisions().items())}

    def shutdown(self) -> None:
        if self.export is not None:
            self.export.shutdown()


def explain(t: AutoscalerTelemetry, key: str, decision: Decision | None) -> dict[str, Any]:
    ns, _, name = key.partition("/")
    decider = t.multiscaler.get(ns, name)
    out: dict[str, Any] = {"attributes": t.attributes(key)}
    if decider is not None:
        spec = decider.spec
        out["spec"] = {
            "scalingMetric": spec.scaling_metric,
            "targetValue": spec.target_value,
            "totalValue": spec.total_value,
            "targetBurstCapacity": spec.target_burst_capacity,
            "panicThreshold": spec.panic_threshold,
            "maxScaleUpRate": spec.max_scale_up_rate,
            "maxScaleDownRate": spec.max_scale_down_rate,
            "scaleDownDelaySeconds": spec.scale_down_delay,
            "activationScale": spec.activation_scale,
            "reachable": spec.reachable,
        }
        out["status"] = {
            "desiredScale": decider.status.desired_scale,
            "excessBurstCapacity": decider.status.excess_burst_capacity,
        }
    coll = t.collector.collection(key)
    if coll is None:
        out["windows"] = None
    else:
        now = t.clock()
        windows: dict[str, Any] = {
            "stableWindowSeconds": coll.spec.stable_window,
            "panicWindowSeconds": coll.spec.panic_window,
            "scrapeTarget": coll.spec.scrape_target,
            "lastScrapeError": str(coll.last_error) if coll.last_error is not None else None,
        }
        for metric, read in (
            ("concurrency", t.collector.stable_and_panic_concurrency),
            ("rps", t.collector.stable_and_panic_rps),
        ):
            try:
                stable, panic = read(key, now)
                windows[metric] = {"stable": stable, "panic": panic}
            except (NoDataError, NotCollectingError) as exc:
                windows[metric] = {"error": type(exc).__name__}
        out["windows"] = windows
    out["lastDecision"] = decision.explain() if decision is not None else None
    return out


OBSERVABILITY_CONFIG_NAME = "config-observability"


async def read_observability(api: Any, namespace: str) -> ObservabilitySettings:
    """`config-observability`, read once at start (as the activator does, §3.1); defaults when
    it is missing or unreadable, a logged error and defaults when it is malformed."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from .kube import call_obj, is_not_found

    try:
        cm = await call_obj(api.core.read_namespaced_config_map, OBSERVABILITY_CONFIG_NAME, namespace)
    except ApiException as exc:
        if not is_not_found(exc):
            logger.warning("could not read %s, metrics off: %s", OBSERVABILITY_CONFIG_NAME, exc.status)
        return ObservabilitySettings()
    except Exception as exc:
        logger.warning("could not read %s, metrics off: %s", OBSERVABILITY_CONFIG_NAME, exc)
        return ObservabilitySettings()
    try:
        return ObservabilitySettings.from_configmap(cm.get("data") or {})
    except ValueError as exc:
        logger.error("%s, metrics off", exc)
        return ObservabilitySettings()


class TelemetryServers:
    """The Prometheus listener (when `metrics-protocol: prometheus`) and the debug listener."""

    def __init__(self, telemetry: AutoscalerTelemetry, debug_address: tuple[str, int] | None, token: str) -> None:
        from sluice.http.server import HttpServer
        from sluice.telemetry.debug import DebugHandler

        self.telemetry = telemetry
        self.debug_address = debug_address
        self.metrics_server: HttpServer | None = None
        export = telemetry.export
        if export is not None and export.registry is not None:
            from sluice.telemetry.metrics import ScrapeHandler

            self.metrics_server = HttpServer(ScrapeHandler(export))
        self.debug_server: HttpServer | None = None
        if debug_address is not None:
            self.debug_server = HttpServer(DebugHandler({"/debug/revisions": telemetry.debug}, token))
        self.metrics_port = 0
        self.debug_port = 0

    async def start(self, settings: ObservabilitySettings) -> None:
        if self.metrics_server is not None:
            address = settings.metrics.prometheus_address(DEFAULT_METRICS_PORT)
            assert address is not None
            await self.metrics_server.listen(address[0] or None, address[1])
            self.metrics_port = self.metrics_server.ports[0]
        if self.debug_server is not None and self.debug_address is not None:
            await self.debug_server.listen(self.debug_address[0], self.debug_address[1])
            self.debug_port = self.debug_server.ports[0]
            logger.info("debug endpoint on %s:%d/debug/revisions", self.debug_address[0], self.debug_port)

    async def stop(self) -> None:
        for server in (self.metrics_server, self.debug_server):
            if server is not None:
                await server.shutdown(timeout=1.0)
        self.telemetry.shutdown()


async def start_telemetry(app: AutoscalerApp, options: Options) -> TelemetryServers:
    """Reads `config-observability`, builds the gauges and starts the listeners (app.start())."""
    from sluice.telemetry.debug import parse_debug_address

    settings = await read_observability(app.api, options.system_namespace)

    def labels_of(key: str) -> Mapping[str, str]:
        ns, _, name = key.partition("/")
        pa = app.pa_informer.get(ns, name) or {}
        return dict((pa.get("metadata") or {}).get("labels") or {})

    try:
        telemetry = AutoscalerTelemetry(
            settings, app.multiscaler, app.collector, labels_of, options.system_namespace, options.pod_name,
            options.extra, app.clock, lambda: app.kpa.reported,
        )  # fmt: skip
    except ImportError as exc:
        logger.error(missing_extra(exc))
        telemetry = AutoscalerTelemetry(
            ObservabilitySettings(), app.multiscaler, app.collector, labels_of, options.system_namespace,
            options.pod_name, options.extra, app.clock,
        )  # fmt: skip
    servers = TelemetryServers(
        telemetry, parse_debug_address(options.debug_address, DEFAULT_DEBUG_PORT), options.debug_token
    )
    await servers.start(settings)
    return servers
