"""The pre-1.19 Prometheus names, opt-in (README feature table; knative/operator#2121).

Knative 1.19 replaced its OpenCensus metrics with OpenTelemetry ones, and dashboards wired to
`revision_app_request_count` / `revision_app_request_latencies` (queue-proxy) and
`activator_request_count` / `activator_request_latencies` (activator) went blank; #16216 asks
for the latter back. With `sluice-legacy-prometheus-names` (activator, `config-observability`)
or `SLUICE_LEGACY_PROMETHEUS_NAMES=true` (queue-proxy env) these series are exposed beside the
OTel ones on the same Prometheus scrape, with the old labels and millisecond buckets.

A prometheus_client collector over plain counters: one dict lookup and a bisect per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["LEGACY_LATENCY_BOUNDS_MS", "LegacyRequestMetrics"]

# OpenCensus `Buckets125(1, 100000)`: Knative's pre-1.19 request latency distribution, in ms.
LEGACY_LATENCY_BOUNDS_MS = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0,
    100000.0,
)  # fmt: skip

# The pre-1.19 label set: revision labels, then the response code and its class.
LABELS = (
    "namespace_name",
    "service_name",
    "configuration_name",
    "revision_name",
    "pod_name",
    "container_name",
    "response_code",
    "response_code_class",
)


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LEGACY_LATENCY_BOUNDS_MS) + 1)
        self.count = 0
        self.sum = 0.0


class LegacyRequestMetrics:
    """`<prefix>_count` and `<prefix>_latencies` (e.g. prefix `revision_app_request`)."""

    def __init__(self, prefix: str, pod_name: str, container_name: str) -> None:
        self.prefix = prefix
        self.pod_name = pod_name
        self.container_name = container_name
        self._series: dict[tuple[str, ...], _Series] = {}

    def observe(self, revision: Mapping[str, str], status: int, seconds: float) -> None:
        """`revision` has kn.revision.name, kn.configuration.name, kn.service.name, k8s.namespace.name."""
        key = (
            revision.get("k8s.namespace.name", ""),
            revision.get("kn.service.name", ""),
            revision.get("kn.configuration.name", ""),
            revision.get("kn.revision.name", ""),
            self.pod_name,
            self.container_name,
            str(status),
            f"{status // 100}xx",
        )
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        ms = seconds * 1000.0
        series.buckets[bisect_left(LEGACY_LATENCY_BOUNDS_MS, ms)] += 1
        series.count += 1
        series.sum += ms

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily, Metric

        # OpenCensus exposed the count without `_total`; prometheus_client would add it to a
        # `counter`, so the family is untyped (PromQL's rate() reads it the same).
        count = Metric(f"{self.prefix}_count", "The number of requests that are routed", "unknown")
        latencies = HistogramMetricFamily(
            f"{self.prefix}_latencies", "The response time in millisecond", labels=list(LABELS)
        )
        les = [_le(b) for b in LEGACY_LATENCY_BOUNDS_MS] + ["+Inf"]
        for key, series in self._series.items():
            count.add_sample(f"{self.prefix}_count", dict(zip(LABELS, key, strict=True)), series.count)
            cumulative = 0
            buckets = []
            for le, n in zip(les, series.buckets, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            latencies.add_metric(list(key), buckets, series.sum)
        yield count
        yield latencies


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else repr(bound)
