"""What one decider evaluation computed and why (CONTRACT.md §4.7), kept by the decider for the
decider gauges (autoscaler/metrics.py) and the debug endpoint (autoscaler/debug.py).

A plain record of the intermediate values of `Autoscaler.scale()`; the explanations are derived
here, so the decider itself only stores one object per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .annotations import RPS
from .resources import DeciderSpec

__all__ = ["Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    at: float  # Unix seconds of the evaluation
    spec: DeciderSpec
    ready: int  # step 1: ready pods (raw, not max(1, ready))
    stable: float  # step 2: observed stable-window value (concurrency or RPS)
    panic: float  # step 2: observed panic-window value
    max_scale_up: int  # step 3
    max_scale_down: int  # step 3
    dspc: int  # step 4: desired pods by the stable window, before clamping
    dppc: int  # step 4: desired pods by the panic window, before clamping
    desired_stable: int  # steps 4-5: clamped, activation scale applied
    desired_panic: int
    panicking: bool  # step 6
    max_panic_pods: int  # step 7
    before_delay: int  # step 7's result, before the scale-down delay window
    desired: int  # step 8: the result
    excess_burst_capacity: int  # step 9

    @property
    def metric(self) -> str:
        return "rps" if self.spec.scaling_metric == RPS else "concurrency"

    @property
    def rate_limits(self) -> list[str]:
        """Which step-3 limits changed the outcome."""
        wanted = max(self.dspc, self.dppc) if self.panicking else self.dspc
        out = []
        if wanted > self.max_scale_up:
            out.append(f"max scale-up rate: wanted {wanted}, at most {self.max_scale_up}")
        low = min(self.dspc, self.dppc) if self.panicking else self.dspc
        if low < self.max_scale_down:
            out.append(f"max scale-down rate: wanted {low}, at least {self.max_scale_down}")
        return out

    @property
    def activator_in_path(self) -> bool:
        """Negative excess burst capacity keeps the activator in the request path (§4.4)."""
        return self.excess_burst_capacity < 0

    def explain(self) -> dict[str, Any]:
        spec = self.spec
        why = "panic: never scaling down, holding the max desired of this panic" if self.panicking else "stable"
        return {
            "at": self.at,
            "metric": self.metric,
            "readyPods": self.ready,
            "observedStable": self.stable,
            "observedPanic": self.panic,
            "target": spec.target_value,
            "total": spec.total_value,
            "maxScaleUp": self.max_scale_up,
            "maxScaleDown": self.max_scale_down,
            "desiredByStableWindow": self.dspc,
            "desiredByPanicWindow": self.dppc,
            "desiredStable": self.desired_stable,
            "desiredPanic": self.desired_panic,
            "panicMode": self.panicking,
            "maxPanicPods": self.max_panic_pods,
            "beforeScaleDownDelay": self.before_delay,
            "desiredPods": self.desired,
            "excessBurstCapacity": self.excess_burst_capacity,
            "why": {
                "mode": why,
                "rateLimitsApplied": self.rate_limits,
                "scaleDownDelayHolding": self.desired > self.before_delay,
                "activationScaleApplied": spec.activation_scale > 1
                and (self.desired_stable == spec.activation_scale or self.desired_panic == spec.activation_scale),
                "activatorInPath": self.activator_in_path,
                "reachable": spec.reachable,
            },
        }
