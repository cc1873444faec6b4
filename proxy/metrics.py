"""The queue-proxy's user metrics (CONTRACT.md §2.10), exported by
`sluice.telemetry.metrics.MetricsExport` (Prometheus on :9091, or OTLP) per `requestMetrics`.

Built only when `requestMetrics.protocol` is not `none`: the OpenTelemetry SDK is imported by
whoever builds the export, never by a pod with metrics off. The per-request histograms are the
export's in-place ones (`sluice.telemetry.histograms`: the SDK's `record` would cost more than
the rest of the request); the queue depth is an observable gauge read from the breaker at
collection time, so requests pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sluice.http.server import HttpExchange
from sluice.telemetry.histograms import HistogramStream
from sluice.telemetry.instruments import INVOCATION_DURATION_BOUNDS, queue_wait_histogram
from sluice.telemetry.legacy import LegacyRequestMetrics
from sluice.telemetry.otelhttp import ClientMetrics, ServerMetrics, route_tag

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from sluice.telemetry.metrics import MetricsExport

__all__ = ["QueueProxyMetrics"]


class QueueProxyMetrics:
    """`kn.serving.invocation.duration`, `kn.serving.queue.depth` (cc ≥ 1 only), otelhttp's
    `http.server.*` (with `kn.route.tag`) and `http.client.*` (towards the user container), and
    Sluice's `sluice.queue.wait`; plus the opt-in pre-1.19 `revision_app_request_*` names."""

    def __init__(
        self,
        export: MetricsExport,
        queue_depth: Callable[[], int] | None,
        legacy: LegacyRequestMetrics | None = None,
        revision: dict[str, str] | None = None,
        user_port: int = 8080,
    ) -> None:
        histograms = export.histograms
        self.invocation_duration = histograms.histogram(
            "kn.serving.invocation.duration",
            "s",
            "The duration of the request handled by the user container",
            INVOCATION_DURATION_BOUNDS,
        )
        self.queue_wait = queue_wait_histogram(histograms, "breaker queue").stream({})
        self.server = ServerMetrics(histograms)
        self.client = ClientMetrics(histograms)
        self.user_dest = f"127.0.0.1:{user_port}"
        self._depth = queue_depth
        if queue_depth is not None:
            export.meter.create_observable_gauge(
                "kn.serving.queue.depth",
                callbacks=[self._observe_depth],
                unit="{request}",
                description="Number of requests admitted by the breaker (queued + running)",
            )
        self.legacy = legacy
        self.revision = revision or {}
        self._by_status: dict[int, HistogramStream] = {}

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        assert self._depth is not None
        return [Observation(self._depth())]

    def observe_invocation(self, status_code: int, seconds: float) -> None:
        stream = self._by_status.get(status_code)
        if stream is None:
            stream = self._by_status[status_code] = self.invocation_duration.stream(
                {"http.response.status_code": status_code}
            )
        stream.record(seconds)
        if self.legacy is not None:
            self.legacy.observe(self.revision, status_code, seconds)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.record(seconds)

    def observe_http(
        self,
        ex: HttpExchange,
        status: int,
        seconds: float,
        request_bytes: int,
        upstream: float,
        upstream_outcome: int | str,
    ) -> None:
        """otelhttp's histograms for one request: the server side always; the client side when
        the request went to the user container (`upstream` ≥ 0: seconds to its response head)."""
        self.server.record(ex, status, seconds, request_bytes, (("kn.route.tag", route_tag(ex)),))
        if upstream >= 0:
            version = "2.0" if ex.http2 else "1.1"
            self.client.record(ex.method, self.user_dest, version, upstream_outcome, upstream, request_bytes)
