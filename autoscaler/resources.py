"""What a PodAutoscaler asks of the autoscaler, derived from its annotations and the config.

Pure functions over a PodAutoscaler as a Kubernetes JSON dict (camelCase, as the API serves it):
the decider spec (CONTRACT.md §4.5; Knative `kpa/resources/decider.go`, `resources/target.go`), the
Metric spec (§4.2), scale bounds and initial scale (§4.4 steps 2-3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .annotations import CONCURRENCY, RPS, RevisionAnnotations
from .config import TARGET_MIN, AutoscalerConfig

__all__ = [
    "DeciderSpec",
    "MetricSpec",
    "annotations_of",
    "initial_scale",
    "make_decider_spec",
    "make_metric_spec",
    "resolve_metric_target",
    "scale_bounds",
]

UNREACHABLE = "Unreachable"
BUCKET_SIZE = 1.0  # seconds, §4.8


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    """Knative's `scaling.DeciderSpec`. Durations in seconds."""

    max_scale_up_rate: float
    max_scale_down_rate: float
    scaling_metric: str
    target_value: float
    total_value: float
    target_burst_capacity: float
    activator_capacity: float
    panic_threshold: float
    stable_window: float
    scale_down_delay: float
    initial_scale: int
    activation_scale: int
    reachable: bool


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """The spec of the Metric object `<pa>` (§4.2) and what the collector needs from it."""

    stable_window: float
    panic_window: float
    scrape_target: str
    aggregation_algorithm: str = "linear"

    def to_json(self) -> dict[str, Any]:
        """The Metric `spec` as Kubernetes JSON: durations are integer nanoseconds (§7)."""
        return {
            "stableWindow": round(self.stable_window * 1e9),
            "panicWindow": round(self.panic_window * 1e9),
            "scrapeTarget": self.scrape_target,
        }


def _spec(pa: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pa.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def annotations_of(pa: Mapping[str, Any]) -> RevisionAnnotations:
    meta = pa.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    return RevisionAnnotations.parse(ann if isinstance(ann, Mapping) else None)


def _container_concurrency(pa: Mapping[str, Any]) -> int:
    cc = _spec(pa).get("containerConcurrency")
    return cc if isinstance(cc, int) and not isinstance(cc, bool) and cc > 0 else 0


def _reachable(pa: Mapping[str, Any]) -> bool:
    return _spec(pa).get("reachability") != UNREACHABLE


def resolve_metric_target(
    pa: Mapping[str, Any], config: AutoscalerConfig, ann: RevisionAnnotations | None = None
) -> tuple[float, float]:
    """(target, total) per pod for the scaling metric (§4.5, Knative `ResolveMetricTarget`)."""
    ann = ann if ann is not None else annotations_of(pa)
    cc = _container_concurrency(pa)
    if ann.metric == RPS:
        total = config.rps_target_default
        utilization = config.target_utilization
    else:
        # cc = 0 means unlimited: target the configured default instead.
        total = float(cc) if cc else config.container_concurrency_target_default
        utilization = config.container_concurrency_target_fraction
    if ann.target is not None:
        total = ann.target
        if ann.metric == CONCURRENCY and cc:
            # Never aim for more concurrency per pod than the container accepts.
            total = min(ann.target, float(cc))
    if ann.target_utilization is not None:
        utilization = ann.target_utilization
    return max(TARGET_MIN, total * utilization), total


def initial_scale(
    pa: Mapping[str, Any], config: AutoscalerConfig, ann: RevisionAnnotations | None = None
) -> int:
    """§4.4 step 3: the annotation counts only if > 0, or 0 with allow-zero-initial-scale."""
    ann = ann if ann is not None else annotations_of(pa)
    if ann.initial_scale is None or (ann.initial_scale == 0 and not config.allow_zero_initial_scale):
        return config.initial_scale
    return ann.initial_scale


def scale_bounds(
    pa: Mapping[str, Any], config: AutoscalerConfig, ann: RevisionAnnotations | None = None
) -> tuple[int, int]:
    """(min, max) scale, §4.4 step 2: min is 0 for an unreachable revision; max 0 = unbounded."""
    ann = ann if ann is not None else annotations_of(pa)
    lo = ann.min_scale if ann.min_scale is not None else config.min_scale
    hi = ann.max_scale if ann.max_scale is not None else config.max_scale
    if not _reachable(pa):
        lo = 0
    return lo, hi


def make_decider_spec(pa: Mapping[str, Any], config: AutoscalerConfig) -> DeciderSpec:
    """§4.5: the decider spec for a PodAutoscaler under `config`."""
    ann = annotations_of(pa)
    target, total = resolve_metric_target(pa, config, ann)
    pt = ann.panic_threshold_percentage
    tbc = ann.target_burst_capacity
    return DeciderSpec(
        max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate,
        scaling_metric=RPS if ann.metric == RPS else CONCURRENCY,
        target_value=target,
        total_value=total,
        target_burst_capacity=tbc if tbc is not None else config.target_burst_capacity,
        activator_capacity=config.activator_capacity,
        panic_threshold=(pt if pt is not None else config.panic_threshold_percentage) / 100.0,
        stable_window=ann.window if ann.window is not None else config.stable_window,
        scale_down_delay=ann.scale_down_delay
        if ann.scale_down_delay is not None
        else config.scale_down_delay,
        initial_scale=initial_scale(pa, config, ann),
        activation_scale=ann.activation_scale or 0,
        reachable=_reachable(pa),
    )


def make_metric_spec(pa: Mapping[str, Any], config: AutoscalerConfig) -> MetricSpec:
    """§4.2: windows of the Metric `<pa>` and its scrape target.

    panicWindow = round_to_second(stableWindow x panicWindowPercentage / 100), at least 1 s. The
    scrape target is the PA's `status.metricsServiceName`, or "" when the effective TBC is -1
    (the activator is always in the path and reports everything).
    """
    ann = annotations_of(pa)
    stable = ann.window if ann.window is not None else config.stable_window
    pct = ann.panic_window_percentage
    pct = pct if pct is not None else config.panic_window_percentage
    # Go's Duration.Round(time.Second) on nanoseconds: halves round away from zero.
    panic_ns = math.floor(round(stable * 1e9) * pct / 100.0)
    panic = float((panic_ns + 500_000_000) // 1_000_000_000)
    panic = max(panic, BUCKET_SIZE)
    tbc = ann.target_burst_capacity if ann.target_burst_capacity is not None else config.target_burst_capacity
    status = pa.get("status")
    service = status.get("metricsServiceName", "") if isinstance(status, Mapping) else ""
    return MetricSpec(
        stable_window=stable,
        panic_window=panic,
        scrape_target="" if tbc == -1 else (service if isinstance(service, str) else ""),
        aggregation_algorithm=ann.metric_aggregation_algorithm,
    )
