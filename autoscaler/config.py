"""`config-autoscaler` (CONTRACT.md §4.11, Knative `pkg/autoscaler/config/config.go`).

`AutoscalerConfig.from_configmap(data)` parses and validates with Knative's ranges. Unlike Go, which
stops at the first bad key, every bad key is named in one `ConfigError` (ARCHITECTURE.md
conventions). `ConfigStore` holds the configuration in force and applies live updates: an invalid
update is logged and the previous configuration stays in effect (§4.11, last paragraph).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sluice.config import ConfigError, Reader

__all__ = [
    "CONFIG_NAME",
    "KPA_CLASS",
    "AutoscalerConfig",
    "ConfigStore",
]

logger = logging.getLogger("autoscaler.config")

CONFIG_NAME = "config-autoscaler"
KPA_CLASS = "kpa.autoscaling.knative.dev"

# Knative's `autoscaling.TargetMin`, `WindowMin`/`WindowMax`, `PanicWindowPercentageMin/Max`.
TARGET_MIN = 0.01
WINDOW_MIN = 6.0
WINDOW_MAX = 3600.0
PANIC_WINDOW_PERCENTAGE_MIN = 1.0
PANIC_WINDOW_PERCENTAGE_MAX = 100.0

# RPS target utilisation is an internal constant, not read from the ConfigMap (§4.5).
RPS_TARGET_UTILIZATION = 0.7

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def _whole_seconds(seconds: float) -> bool:
    # Go: `d.Round(time.Second) != d`, evaluated on integer nanoseconds.
    return round(seconds * 1e9) % 1_000_000_000 == 0


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """The cluster-wide autoscaler configuration. Durations are in seconds."""

    enable_scale_to_zero: bool = True
    # Already a fraction in (0, 1]: the ConfigMap's percentage is divided by 100 when > 1.
    container_concurrency_target_fraction: float = 0.7
    container_concurrency_target_default: float = 100.0
    target_utilization: float = RPS_TARGET_UTILIZATION
    rps_target_default: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    target_burst_capacity: float = 211.0
    panic_window_percentage: float = 10.0
    activator_capacity: float = 100.0
    panic_threshold_percentage: float = 200.0
    stable_window: float = 60.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA_CLASS
    allow_zero_initial_scale: bool = False
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Parses `config-autoscaler` data; raises `ConfigError` naming every bad key.

        Keys that are absent (or empty) keep Knative's defaults; `_example` and unknown keys are
        ignored, as Knative's `cm.Parse` does.
        """
        r = Reader(data, source=f"ConfigMap {CONFIG_NAME}")
        d = cls()
        pct = r.float("container-concurrency-target-percentage", d.container_concurrency_target_fraction)
        cfg = cls(
            pod_autoscaler_class=r.str("pod-autoscaler-class", d.pod_autoscaler_class),
            enable_scale_to_zero=r.bool("enable-scale-to-zero", d.enable_scale_to_zero),
            allow_zero_initial_scale=r.bool("allow-zero-initial-scale", d.allow_zero_initial_scale),
            max_scale_up_rate=r.float("max-scale-up-rate", d.max_scale_up_rate),
            max_scale_down_rate=r.float("max-scale-down-rate", d.max_scale_down_rate),
            # Legacy: values in (0, 1] are fractions, larger ones percentages (config.go).
            container_concurrency_target_fraction=pct / 100.0 if pct > 1.0 else pct,
            container_concurrency_target_default=r.float(
                "container-concurrency-target-default", d.container_concurrency_target_default
            ),
            rps_target_default=r.float("requests-per-second-target-default", d.rps_target_default),
            target_burst_capacity=r.float("target-burst-capacity", d.target_burst_capacity),
            panic_window_percentage=r.float("panic-window-percentage", d.panic_window_percentage),
            activator_capacity=r.float("activator-capacity", d.activator_capacity),
            panic_threshold_percentage=r.float("panic-threshold-percentage", d.panic_threshold_percentage),
            initial_scale=r.int("initial-scale", d.initial_scale, minimum=_INT32_MIN, maximum=_INT32_MAX),
            min_scale=r.int("min-scale", d.min_scale, minimum=_INT32_MIN, maximum=_INT32_MAX),
            max_scale=r.int("max-scale", d.max_scale, minimum=_INT32_MIN, maximum=_INT32_MAX),
            max_scale_limit=r.int(
                "max-scale-limit", d.max_scale_limit, minimum=_INT32_MIN, maximum=_INT32_MAX
            ),
            stable_window=r.duration("stable-window", d.stable_window),
            scale_down_delay=r.duration("scale-down-delay", d.scale_down_delay),
            scale_to_zero_grace_period=r.duration("scale-to-zero-grace-period", d.scale_to_zero_grace_period),
            scale_to_zero_pod_retention_period=r.duration(
                "scale-to-zero-pod-retention-period", d.scale_to_zero_pod_retention_period
            ),
        )
        cfg._validate(r, data)
        r.check()
        return cfg

    def _validate(self, r: Reader, data: Mapping[str, str]) -> None:
        """Knative's `validate()`, but collecting every violation instead of the first."""

        def bad(key: str, message: str) -> None:
            r.fail(f"{key}={data.get(key, '')!r}", message)

        if self.scale_to_zero_grace_period <= 0:
            bad("scale-to-zero-grace-period", "must be positive")
        if self.scale_down_delay < 0:
            bad("scale-down-delay", "cannot be negative")
        elif not _whole_seconds(self.scale_down_delay):
            bad("scale-down-delay", "must be specified with at most second precision")
        if self.scale_to_zero_pod_retention_period < 0:
            bad("scale-to-zero-pod-retention-period", "cannot be negative")
        if self.target_burst_capacity < 0 and self.target_burst_capacity != -1:
            bad("target-burst-capacity", "must be either non-negative or -1 (for unlimited)")
        fraction = self.container_concurrency_target_fraction
        if fraction <= 0 or fraction > 1:
            bad("container-concurrency-target-percentage", "is outside of valid range of (0, 100]")
        elif fraction * self.container_concurrency_target_default < TARGET_MIN:
            bad(
                "container-concurrency-target-default",
                f"with container-concurrency-target-percentage yields a target concurrency of "
                f"{fraction * self.container_concurrency_target_default}, can't be less than {TARGET_MIN}",
            )
        if self.rps_target_default < TARGET_MIN:
            bad("requests-per-second-target-default", f"must be at least {TARGET_MIN}")
        if self.activator_capacity < 1:
            bad("activator-capacity", "must be at least 1")
        if self.max_scale_up_rate <= 1.0:
            bad("max-scale-up-rate", "must be greater than 1.0")
        if self.max_scale_down_rate <= 1.0:
            bad("max-scale-down-rate", "must be greater than 1.0")
        if not WINDOW_MIN <= self.stable_window <= WINDOW_MAX:
            bad("stable-window", f"must be in [{WINDOW_MIN:g}s; {WINDOW_MAX:g}s] range")
        elif not _whole_seconds(self.stable_window):
            bad("stable-window", "must be specified with at most second precision")
        if not PANIC_WINDOW_PERCENTAGE_MIN <= self.panic_window_percentage <= PANIC_WINDOW_PERCENTAGE_MAX:
            bad(
                "panic-window-percentage",
                f"must be in [{PANIC_WINDOW_PERCENTAGE_MIN:g}, {PANIC_WINDOW_PERCENTAGE_MAX:g}] interval",
            )
        if self.initial_scale < 0 or (self.initial_scale == 0 and not self.allow_zero_initial_scale):
            bad(
                "initial-scale",
                "must be at least 0 (or at least 1 when allow-zero-initial-scale is false)",
            )
        if self.min_scale < 0:
            bad("min-scale", "must be at least 0")
        if self.max_scale_limit < 0:
            bad("max-scale-limit", "must be at least 0")
        # A default max-scale is required once a limit is set (config.go: minMaxScale = 1).
        min_max_scale = 1 if self.max_scale_limit > 0 else 0
        if self.max_scale < min_max_scale or (0 < self.max_scale_limit < self.max_scale):
            bad("max-scale", f"must be in [{min_max_scale}, max-scale-limit({self.max_scale_limit})] range")
        if self.max_scale > 0 and self.min_scale > self.max_scale:
            bad("min-scale", f"must be less than or equal to max-scale ({self.max_scale})")


class ConfigStore:
    """The `config-autoscaler` in force, replaced atomically on valid updates.

    The reconciler feeds every ConfigMap event to `update()`; listeners (e.g. "re-enqueue every
    KPA PodAutoscaler", §4.1) run after a valid change.
    """

    def __init__(self, initial: AutoscalerConfig | None = None) -> None:
        self._current = initial if initial is not None else AutoscalerConfig()
        self._listeners: list[Callable[[AutoscalerConfig], None]] = []

    @property
    def current(self) -> AutoscalerConfig:
        return self._current

    def on_change(self, listener: Callable[[AutoscalerConfig], None]) -> None:
        self._listeners.append(listener)

    def update(self, data: Mapping[str, str] | None) -> ConfigError | None:
        """Applies new ConfigMap data. Returns the error (and keeps the old config) if invalid."""
        try:
            new = AutoscalerConfig.from_configmap(data or {})
        except ConfigError as exc:
            logger.error("rejected %s update, keeping the previous configuration: %s", CONFIG_NAME, exc)
            return exc
        if new != self._current:
            self._current = new
            logger.info("applied new %s", CONFIG_NAME)
            for listener in self._listeners:
                listener(new)
        return None
