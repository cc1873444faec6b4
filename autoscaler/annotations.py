"""Per-revision autoscaling annotations (CONTRACT.md §4.12, Knative `pkg/apis/autoscaling/register.go`).

`RevisionAnnotations.parse(annotations)` reads every key once; each field is `None` when the
annotation is absent, unparsable or outside the range the webhook enforces, so the caller falls
back to `config-autoscaler` (§4.12: "unparsable values fall back to the config default"). Knative's
webhook would have rejected out-of-range values before they reached the autoscaler; Sluice may run
without that webhook (`sluice local`), so it treats them like unparsable ones and names them in
`problems` for one log line.

Canonical keys win over their legacy camelCase aliases (Knative `kmap.KeyPriority` order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sluice.config import parse_go_duration

T = TypeVar("T")

__all__ = [
    "CLASS",
    "CONCURRENCY",
    "METRIC",
    "RPS",
    "RevisionAnnotations",
    "parse_go_float",
    "parse_go_int32",
]

GROUP = "autoscaling.knative.dev/"

CLASS = GROUP + "class"
METRIC = GROUP + "metric"
TARGET = GROUP + "target"
TARGET_UTILIZATION_PERCENTAGE = (
    GROUP + "target-utilization-percentage",
    GROUP + "targetUtilizationPercentage",
)
TARGET_BURST_CAPACITY = (GROUP + "target-burst-capacity", GROUP + "targetBurstCapacity")
MIN_SCALE = (GROUP + "min-scale", GROUP + "minScale")
MAX_SCALE = (GROUP + "max-scale", GROUP + "maxScale")
INITIAL_SCALE = (GROUP + "initial-scale", GROUP + "initialScale")
ACTIVATION_SCALE = GROUP + "activation-scale"
WINDOW = GROUP + "window"
PANIC_WINDOW_PERCENTAGE = (GROUP + "panic-window-percentage", GROUP + "panicWindowPercentage")
PANIC_THRESHOLD_PERCENTAGE = (GROUP + "panic-threshold-percentage", GROUP + "panicThresholdPercentage")
SCALE_DOWN_DELAY = (GROUP + "scale-down-delay", GROUP + "scaleDownDelay")
SCALE_TO_ZERO_POD_RETENTION_PERIOD = (
    GROUP + "scale-to-zero-pod-retention-period",
    GROUP + "scaleToZeroPodRetentionPeriod",
)
METRIC_AGGREGATION_ALGORITHM = (GROUP + "metric-aggregation-algorithm", GROUP + "metricAggregationAlgorithm")
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"

KPA = "kpa.autoscaling.knative.dev"
CONCURRENCY = "concurrency"
RPS = "rps"
LINEAR = "linear"
WEIGHTED_EXPONENTIAL = "weighted-exponential"
_WEIGHTED_ALIASES = ("weighted-exponential", "weightedExponential")

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_DECIMAL_INT = re.compile(r"[+-]?[0-9]+\Z")
# Go's strconv.ParseFloat decimal syntax (no whitespace, no underscores outside base prefixes).
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def parse_go_int32(text: str) -> int:
    """Go `strconv.ParseInt(s, 10, 32)`: strict decimal, no spaces or underscores, 32-bit range."""
    if not _DECIMAL_INT.match(text):
        raise ValueError(f"invalid integer {text!r}")
    value = int(text, 10)
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"integer {text!r} out of 32-bit range")
    return value


def parse_go_float(text: str) -> float:
    """Go `strconv.ParseFloat(s, 64)` for finite decimal values (inf/NaN are refused)."""
    if not _GO_FLOAT.match(text):
        raise ValueError(f"invalid number {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text!r} out of range")
    return value


def _whole_seconds(seconds: float) -> bool:
    return round(seconds * 1e9) % 1_000_000_000 == 0


@dataclass(frozen=True, slots=True)
class RevisionAnnotations:
    """Typed view of a PodAutoscaler's annotations. Durations are seconds; None = use the config."""

    pa_class: str = KPA
    metric: str = CONCURRENCY
    target: float | None = None
    # A fraction: the annotation's percentage divided by 100.
    target_utilization: float | None = None
    target_burst_capacity: float | None = None
    min_scale: int | None = None
    max_scale: int | None = None
    initial_scale: int | None = None
    activation_scale: int | None = None
    window: float | None = None
    panic_window_percentage: float | None = None
    panic_threshold_percentage: float | None = None
    scale_down_delay: float | None = None
    scale_to_zero_pod_retention_period: float | None = None
    metric_aggregation_algorithm: str = LINEAR
    progress_deadline: float | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, annotations: Mapping[str, str] | None) -> RevisionAnnotations:
        ann: Mapping[str, str] = annotations or {}
        problems: list[str] = []

        def raw(keys: str | tuple[str, ...]) -> tuple[str, str] | None:
            for key in (keys,) if isinstance(keys, str) else keys:
                value = ann.get(key)
                if value is not None:
                    return key, value
            return None

        def checked(
            keys: str | tuple[str, ...], parse: Callable[[str], T], kind: str, ok: Callable[[T], bool], what: str
        ) -> T | None:
            found = raw(keys)
            if found is None:
                return None
            key, value = found
            try:
                parsed = parse(value)
            except ValueError:
                problems.append(f"{key}={value!r} is not {kind}")
                return None
            if not ok(parsed):
                problems.append(f"{key}={value!r} must be {what}")
                return None
            return parsed

        def number(keys: str | tuple[str, ...], lo: float, hi: float, what: str) -> float | None:
            return checked(keys, parse_go_float, "a number", lambda v: lo <= v <= hi, what)

        def integer(keys: str | tuple[str, ...], lo: int, what: str) -> int | None:
            return checked(keys, parse_go_int32, "a 32-bit integer", lambda v: v >= lo, what)

        def duration(keys: str | tuple[str, ...], lo: float, hi: float, whole: bool, what: str) -> float | None:
            def ok(v: float) -> bool:
                return lo <= v <= hi and (not whole or _whole_seconds(v))

            return checked(keys, parse_go_duration, "a duration", ok, what)

        target_burst_capacity = number(TARGET_BURST_CAPACITY, -1.0, math.inf, "≥ 0 or -1")
        if target_burst_capacity is not None and -1.0 < target_burst_capacity < 0.0:
            problems.append(f"{TARGET_BURST_CAPACITY[0]}={target_burst_capacity!r} must be ≥ 0 or -1")
            target_burst_capacity = None
        tu = number(TARGET_UTILIZATION_PERCENTAGE, 1.0, 100.0, "in [1, 100]")
        min_scale = integer(MIN_SCALE, 0, "≥ 0")
        max_scale = integer(MAX_SCALE, 0, "≥ 0")
        if min_scale is not None and max_scale is not None and 0 < max_scale < min_scale:
            problems.append(f"{MIN_SCALE[0]}={min_scale} must be ≤ {MAX_SCALE[0]}={max_scale}")
            min_scale = max_scale = None
        activation_scale = integer(ACTIVATION_SCALE, 2, "≥ 2")
        if activation_scale is not None and max_scale and activation_scale > max_scale:
            problems.append(f"{ACTIVATION_SCALE}={activation_scale} must be ≤ {MAX_SCALE[0]}={max_scale}")
            activation_scale = None
        algorithm = raw(METRIC_AGGREGATION_ALGORITHM)
        progress = raw(PROGRESS_DEADLINE)
        progress_deadline: float | None = None
        if progress is not None:
            try:
                progress_deadline = parse_go_duration(progress[1])
                if progress_deadline <= 0:
                    raise ValueError("not positive")
            except ValueError:
                problems.append(f"{PROGRESS_DEADLINE}={progress[1]!r} is not a positive duration")
                progress_deadline = None
        return cls(
            pa_class=ann.get(CLASS, KPA),
            # The webhook defaults the metric to concurrency for KPA (§4.2).
            metric=ann.get(METRIC, CONCURRENCY),
            target=number(TARGET, 0.01, math.inf, "≥ 0.01"),
            target_utilization=None if tu is None else tu / 100.0,
            target_burst_capacity=target_burst_capacity,
            min_scale=min_scale,
            max_scale=max_scale,
            initial_scale=integer(INITIAL_SCALE, 0, "≥ 0"),
            activation_scale=activation_scale,
            window=duration(WINDOW, 6.0, 3600.0, True, "a whole-second duration in [6s, 1h]"),
            panic_window_percentage=number(PANIC_WINDOW_PERCENTAGE, 1.0, 100.0, "in [1, 100]"),
            panic_threshold_percentage=number(PANIC_THRESHOLD_PERCENTAGE, 110.0, 1000.0, "in [110, 1000]"),
            scale_down_delay=duration(SCALE_DOWN_DELAY, 0.0, 3600.0, True, "a whole-second duration in [0, 1h]"),
            scale_to_zero_pod_retention_period=duration(
                SCALE_TO_ZERO_POD_RETENTION_PERIOD, 0.0, 3600.0, False, "a duration in [0, 1h]"
            ),
            metric_aggregation_algorithm=(
                WEIGHTED_EXPONENTIAL if algorithm is not None and algorithm[1] in _WEIGHTED_ALIASES else LINEAR
            ),
            progress_deadline=progress_deadline,
            problems=tuple(problems),
        )
