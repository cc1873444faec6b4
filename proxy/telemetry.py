"""The queue-proxy's OpenTelemetry wiring (CONTRACT.md §2.10): a meter provider per
`requestMetrics`, a tracer provider per `tracing`, with the §2.10 resource attributes.

Each piece exists only when its protocol is not `none`; the SDK is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sluice.config import parse_go_bool
from sluice.telemetry.legacy import LegacyRequestMetrics
from sluice.telemetry.metrics import MetricsExport
from sluice.telemetry.resource import component_resource, revision_attributes
from sluice.telemetry.tracing import ServerSpans, Tracing

from .config import QueueProxyConfig
from .metrics import QueueProxyMetrics
from .observability import LEGACY_ENV, ObservabilityConfig

__all__ = ["QueueProxyTelemetry"]

SCOPE = "knative.dev/serving/cmd/queue"


class QueueProxyTelemetry:
    def __init__(
        self,
        cfg: QueueProxyConfig,
        obs: ObservabilityConfig,
        environ: Mapping[str, str],
        queue_depth: Callable[[], int] | None,
    ) -> None:
        revision = revision_attributes(
            cfg.serving_namespace, cfg.serving_service, cfg.serving_configuration, cfg.serving_revision
        )
        resource = component_resource("queue-proxy", cfg.serving_namespace, cfg.serving_pod, environ, revision)
        self.export: MetricsExport | None = None
        self.metrics: QueueProxyMetrics | None = None
        if obs.metrics_export.enabled:
            # The revision goes on every Prometheus series too (dashboards group by kn_revision_name).
            self.export = MetricsExport(obs.metrics_export, resource, SCOPE, frozenset(revision), environ)
            legacy = None
            if obs.metrics_export.protocol == "prometheus" and parse_go_bool(environ.get(LEGACY_ENV, "") or "false"):
                legacy = LegacyRequestMetrics("revision_app_request", cfg.serving_pod, "queue-proxy")
                self.export.add_collector(legacy)
            self.metrics = QueueProxyMetrics(self.export, queue_depth, legacy, revision, cfg.user_port)
        self.tracing: Tracing | None = None
        self.tracer: ServerSpans | None = None
        if obs.trace_export.enabled:
            self.tracing = Tracing(obs.trace_export, resource, SCOPE)
            self.tracer = ServerSpans(self.tracing, "kn.queueproxy.proxy", "kn.queueproxy.wait", revision)

    def shutdown(self) -> None:
        """Pushes what is pending (OTLP metrics, batched spans) before the process exits."""
        if self.export is not None:
            self.export.shutdown()
        if self.tracing is not None:
            self.tracing.shutdown()
