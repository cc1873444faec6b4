"""The queue-proxy's user metrics (CONTRACT.md §2.10) as OpenTelemetry instruments, exported by
`sluice.telemetry.metrics.MetricsExport` (Prometheus on :9091, or OTLP) per `requestMetrics`.

Built only when `requestMetrics.protocol` is not `none`: the OpenTelemetry SDK is imported by
whoever builds the meter, never by a pod with metrics off. The queue depth is an observable
gauge read from the breaker at collection time, so requests pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sluice.telemetry.instruments import INVOCATION_DURATION_BOUNDS, queue_wait_histogram
from sluice.telemetry.legacy import LegacyRequestMetrics

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["QueueProxyMetrics"]


class QueueProxyMetrics:
    """`kn.serving.invocation.duration`, `kn.serving.queue.depth` (cc ≥ 1 only) and Sluice's
    `sluice.queue.wait`; plus the opt-in pre-1.19 `revision_app_request_*` names."""

    def __init__(
        self,
        meter: Meter,
        queue_depth: Callable[[], int] | None,
        legacy: LegacyRequestMetrics | None = None,
        revision: dict[str, str] | None = None,
    ) -> None:
        self.invocation_duration = meter.create_histogram(
            "kn.serving.invocation.duration",
            unit="s",
            description="The duration of the request handled by the user container",
            explicit_bucket_boundaries_advisory=INVOCATION_DURATION_BOUNDS,
        )
        self.queue_wait = queue_wait_histogram(meter, "breaker queue")
        self._depth = queue_depth
        if queue_depth is not None:
            meter.create_observable_gauge(
                "kn.serving.queue.depth",
                callbacks=[self._observe_depth],
                unit="{request}",
                description="Number of requests admitted by the breaker (queued + running)",
            )
        self.legacy = legacy
        self.revision = revision or {}
        # One attributes dict per status code, reused: the SDK keys its streams by their items.
        self._by_status: dict[int, dict[str, Any]] = {}
        self._no_attributes: dict[str, Any] = {}

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        assert self._depth is not None
        return [Observation(self._depth())]

    def observe_invocation(self, status_code: int, seconds: float) -> None:
        attributes = self._by_status.get(status_code)
        if attributes is None:
            attributes = self._by_status[status_code] = {"http.response.status_code": status_code}
        self.invocation_duration.record(seconds, attributes)
        if self.legacy is not None:
            self.legacy.observe(self.revision, status_code, seconds)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.record(seconds, self._no_attributes)
