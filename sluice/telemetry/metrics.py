"""A meter provider exporting the way `config-observability` / `OBSERVABILITY_CONFIG` asks
(CONTRACT.md §2.10, §3.10, §4.7): `prometheus` (a text exposition served on the component's
documented port), OTLP `grpc` or `http/protobuf` (pushed to the endpoint every export interval).

Built on the OpenTelemetry SDK and its exporters, imported here only: a process constructs a
`MetricsExport` only when a protocol other than `none` is configured, so one with metrics off
never loads the SDK (the queue-proxy's start-up time and memory, §2.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sluice.http.server import HttpExchange

from .config import ExportSettings
from .histograms import HotHistograms, delta_preferred
from .runtime import register_runtime_metrics

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

__all__ = ["PROMETHEUS_CONTENT_TYPE", "MetricsExport", "ScrapeHandler", "otlp_url"]

PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def otlp_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL: the endpoint as configured, or `/v1/<signal>` when it has no path."""
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    scheme, _, rest = endpoint.partition("://")
    if "/" not in rest:
        return f"{scheme}://{rest}/v1/{signal}"
    return endpoint


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """(host:port, insecure) for the OTLP gRPC exporter: plain text unless `https://`."""
    if endpoint.startswith("https://"):
        return endpoint[len("https://") :].rstrip("/"), False
    if endpoint.startswith("http://"):
        return endpoint[len("http://") :].rstrip("/"), True
    return endpoint.rstrip("/"), True


class MetricsExport:
    """One component's meter provider and, for `prometheus`, the registry its scrape renders."""

    def __init__(
        self,
        settings: ExportSettings,
        resource: Mapping[str, str],
        scope: str,
        series_attributes: frozenset[str] = frozenset(),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`series_attributes`: resource attributes the Prometheus exposition also copies onto
        every series (the queue-proxy's revision), so a dashboard can group by them without
        joining `target_info`. `environ`: the OTEL_* variables (temporality) of an OTLP export."""
        if not settings.enabled:
            raise ValueError("MetricsExport needs a metrics protocol other than none")
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource as SdkResource

        self.settings = settings
        self.registry: CollectorRegistry | None = None
        sdk_resource = SdkResource.create(dict(resource))
        # Per-request histograms, recorded in place and merged into each collection (histograms.py).
        prometheus = settings.protocol == "prometheus"
        self.histograms = HotHistograms(delta=not prometheus and delta_preferred(environ or {}))
        reader: MetricReader
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # A registry of our own, not prometheus_client's global one: only what we record is
            # exposed, and tests can run several components in one process.
            self.registry = CollectorRegistry(auto_describe=False)
            reader = _merging(PrometheusMetricReader, self.histograms, sdk_resource, scope)(
                registry=self.registry, resource_attribute_filter=series_attributes.__contains__
            )
        else:
            interval_ms = settings.interval * 1000.0
            reader = _merging(PeriodicExportingMetricReader, self.histograms, sdk_resource, scope)(
                _otlp_metric_exporter(settings), export_interval_millis=interval_ms
            )
        self.provider: MeterProvider = MeterProvider(metric_readers=[reader], resource=sdk_resource)
        self.meter: Meter = self.provider.get_meter(scope)
        # Knative exports its Go runtime metrics wherever metrics are on; these are Python's.
        register_runtime_metrics(self.provider.get_meter("sluice/runtime"))
        self.content_type = PROMETHEUS_CONTENT_TYPE

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of everything recorded so far."""
        from prometheus_client import generate_latest

        if self.registry is None:
            return b""
        return generate_latest(self.registry)

    def add_collector(self, collector: Any) -> None:
        """Registers an extra prometheus_client collector (the opt-in pre-1.19 names)."""
        if self.registry is not None:
            self.registry.register(collector)

    def flush(self, timeout: float = 5.0) -> bool:
        return bool(self.provider.force_flush(int(timeout * 1000)))

    def shutdown(self) -> None:
        """Exports what is pending (OTLP) and stops the reader's thread."""
        self.provider.shutdown()


def _merging(base: type[Any], histograms: HotHistograms, resource: Any, scope: str) -> type[Any]:
    """`base` (an SDK reader) whose every collection also carries `histograms`' points, under the
    component's resource and instrumentation scope, as the SDK would for its own instruments.

    `_receive_metrics` is the SDK's documented hook for reader implementations ("called by
    MetricReader.collect when it receives a batch of metrics"); `collect` is wrapped because the
    SDK skips that hook when none of its own instruments has data.
    """
    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    class MergingReader(base):  # type: ignore[misc]
        _received = False

        def collect(self, timeout_millis: float = 10_000) -> None:
            self._received = False
            super().collect(timeout_millis=timeout_millis)
            if not self._received and histograms.instruments:
                self._receive_metrics(MetricsData(resource_metrics=[]), timeout_millis=timeout_millis)

        def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            self._received = True
            metrics = histograms.collect()
            if metrics:
                metrics_data = _merged(metrics_data, metrics)
            elif not metrics_data.resource_metrics:
                return
            super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def _merged(data: Any, metrics: list[Any]) -> Any:
        resource_metrics = list(data.resource_metrics)
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(resource=resource, scope_metrics=[], schema_url="")]
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == scope:
                scopes[i] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *metrics], schema_url=sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(scope=InstrumentationScope(scope), metrics=metrics, schema_url=""))
        resource_metrics[0] = ResourceMetrics(
            resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
        )
        return MetricsData(resource_metrics=resource_metrics)

    MergingReader.__name__ = MergingReader.__qualname__ = "Merging" + base.__name__
    return MergingReader


def _otlp_metric_exporter(settings: ExportSettings) -> Any:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        target, insecure = grpc_target(settings.endpoint or "localhost:4317")
        return GrpcExporter(endpoint=target, insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter(endpoint=otlp_url(settings.endpoint or "localhost:4318", "metrics"))


class ScrapeHandler:
    """`GET /metrics` on the engine's HttpServer: the export's Prometheus exposition; other
    paths 404 (Go's mux answer)."""

    def __init__(self, export: MetricsExport) -> None:
        self.export = export

    def __call__(self, ex: HttpExchange) -> None:
        if ex.url.partition(b"?")[0] != b"/metrics":
            ex.respond_error(404, "404 page not found")
            return
        ex.respond_text(200, self.export.render(), content_type=PROMETHEUS_CONTENT_TYPE)
