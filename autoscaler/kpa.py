"""The pure part of the KPA reconciler (CONTRACT.md §4.2-§4.4; Knative
`pkg/reconciler/autoscaling/kpa/{kpa.go,scaler.go}`, `resources/sks.go`, `resources/metric.go`).

No I/O and no event loop: the PodAutoscaler, SKS and Metric are JSON dicts, time is an explicit
`now` (Unix seconds). `reconciler.py` does the API calls around these functions:

- `PAStatus`               the PA's conditions and the Active-condition queries the scaler needs
- `plan_scale`             §4.4: bounds, initial scale and the scale-to-zero gate -> `ScalePlan`
- `compute_sks_mode`, `compute_num_activators`   §4.3 steps 6-7
- `compute_status`         §4.3 step 9 (desired/actual scale and the Active condition)
- `make_sks`, `make_metric`, `sks_spec_differs`, `metric_spec_differs`, `is_controlled_by`   §4.2
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .annotations import METRIC, RevisionAnnotations
from .conditions import TRUE, ConditionManager, parse_time
from .config import AutoscalerConfig
from .resources import (
    UNREACHABLE,
    DeciderSpec,
    MetricSpec,
    annotations_of,
    initial_scale,
    scale_bounds,
)

__all__ = [
    "ACTIVATION_TIMEOUT_BUFFER",
    "MIN_ACTIVATORS",
    "PROXY",
    "SCALE_UNKNOWN",
    "SERVE",
    "PAStatus",
    "ScalePlan",
    "compute_num_activators",
    "compute_sks_mode",
    "compute_status",
    "is_controlled_by",
    "make_metric",
    "make_sks",
    "metric_spec_differs",
    "plan_scale",
    "sks_proxy_for",
    "sks_ready",
    "sks_spec_differs",
]

SCALE_UNKNOWN = -1
MIN_ACTIVATORS = 2  # kpa.go minActivators
ACTIVATION_TIMEOUT_BUFFER = 30.0  # scaler.go activationTimeoutBuffer
PROXY_REQUEUE = 3.0  # "long enough to ensure the current iteration is finished" (scaler.go)
DEFAULT_PROGRESS_DEADLINE = 600.0  # config-deployment progress-deadline

PROXY, SERVE = "Proxy", "Serve"

ACTIVE = "Active"
SCALE_TARGET_INITIALIZED = "ScaleTargetInitialized"
SKS_READY = "SKSReady"
PA_DEPENDENTS = (ACTIVE, SCALE_TARGET_INITIALIZED, SKS_READY)

NO_TRAFFIC = "NoTraffic"
NO_PRIVATE_SERVICE_NAME = "No Private Service Name"

SKS_API_VERSION = "networking.internal.knative.dev/v1alpha1"
METRIC_API_VERSION = "autoscaling.internal.knative.dev/v1alpha1"
PA_API_VERSION = "autoscaling.internal.knative.dev/v1alpha1"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    status = obj.get("status") if obj is not None else None
    return status if isinstance(status, Mapping) else {}


class PAStatus(ConditionManager):
    """A PodAutoscaler status dict with Knative's `PodAutoscalerStatus` helpers (pa_lifecycle.go)."""

    def __init__(self, status: dict[str, Any], clock: Callable[[], float]) -> None:
        super().__init__(status, PA_DEPENDENTS, clock)

    def is_active(self) -> bool:
        return self.is_true(ACTIVE)

    def is_activating(self) -> bool:
        return self.is_unknown(ACTIVE)

    def is_inactive(self) -> bool:
        return self.is_false(ACTIVE)

    def is_scale_target_initialized(self) -> bool:
        return self.is_true(SCALE_TARGET_INITIALIZED)

    def _active_since(self) -> float:
        cond = self.get(ACTIVE)
        # A missing time reads as the zero time in Go: "for ever".
        return (parse_time(cond.get("lastTransitionTime")) if cond else None) or 0.0

    def active_for(self, now: float) -> float:
        return now - self._active_since() if self.is_active() else -1.0

    def inactive_for(self, now: float) -> float:
        return now - self._active_since() if self.is_inactive() else -1.0

    def can_fail_activation(self, now: float, timeout: float) -> bool:
        return self.is_activating() and now - self._active_since() > timeout

    def mark_active(self) -> None:
        self.mark_true(ACTIVE)

    def mark_activating(self, reason: str, message: str) -> None:
        self.mark_unknown(ACTIVE, reason, message)

    def mark_inactive(self, reason: str, message: str) -> None:
        self.mark_false(ACTIVE, reason, message)

    def mark_resource_not_owned(self, kind: str, name: str) -> None:
        self.mark_inactive("NotOwned", f'There is an existing {kind} "{name}" that we do not own.')

    def mark_scale_target_initialized(self) -> None:
        self.mark_true(SCALE_TARGET_INITIALIZED)

    def mark_sks_ready(self) -> None:
        self.mark_true(SKS_READY)

    def mark_sks_not_ready(self, message: str) -> None:
        self.mark_unknown(SKS_READY, "NotReady", message)


# ---- SKS and Metric objects (§4.2) ------------------------------------------------------------


def _owner_reference(pa: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(pa)
    return {
        "apiVersion": str(pa.get("apiVersion") or PA_API_VERSION),
        "kind": str(pa.get("kind") or "PodAutoscaler"),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: Mapping[str, Any], pa: Mapping[str, Any]) -> bool:
    """metav1.IsControlledBy: the controller ownerReference has the PA's UID."""
    uid = _meta(pa).get("uid")
    for ref in _meta(obj).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return bool(uid) and ref.get("uid") == uid
    return False


def make_sks(pa: Mapping[str, Any], mode: str, num_activators: int) -> dict[str, Any]:
    """resources.MakeSKS: labels copied, only the metric annotation, the PA as controller."""
    meta = _meta(pa)
    annotations = meta.get("annotations") or {}
    sks_meta: dict[str, Any] = {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "ownerReferences": [_owner_reference(pa)],
    }
    labels = dict(meta.get("labels") or {})
    if labels:
        sks_meta["labels"] = labels
    if METRIC in annotations:
        sks_meta["annotations"] = {METRIC: annotations[METRIC]}
    spec = _spec(pa)
    return {
        "apiVersion": SKS_API_VERSION,
        "kind": "ServerlessService",
        "metadata": sks_meta,
        "spec": {
            "mode": mode,
            "objectRef": dict(spec.get("scaleTargetRef") or {}),
            "protocolType": spec.get("protocolType") or "http1",
            "numActivators": num_activators,
        },
    }


def _normalise(value: Any) -> Any:
    """Drops empty fields, as Go's `omitempty` round trip makes them indistinguishable."""
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items() if v not in (None, "", 0, {}, [])}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def sks_spec_differs(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return bool(_normalise(_spec(existing)) != _normalise(_spec(wanted)))


def make_metric(pa: Mapping[str, Any], spec: MetricSpec) -> dict[str, Any]:
    """resources.MakeMetric: labels and annotations copied from the PA, the PA as controller."""
    meta = _meta(pa)
    m_meta: dict[str, Any] = {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "ownerReferences": [_owner_reference(pa)],
    }
    if meta.get("labels"):
        m_meta["labels"] = dict(meta["labels"])
    if meta.get("annotations"):
        m_meta["annotations"] = dict(meta["annotations"])
    return {"apiVersion": METRIC_API_VERSION, "kind": "Metric", "metadata": m_meta, "spec": spec.to_json()}


def metric_spec_differs(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    a, b = _spec(existing), _spec(wanted)
    return (
        a.get("stableWindow") != b.get("stableWindow")
        or a.get("panicWindow") != b.get("panicWindow")
        or (a.get("scrapeTarget") or "") != (b.get("scrapeTarget") or "")
    )


def sks_ready(sks: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(SKS Ready is True, its Ready message)."""
    for c in _status(sks).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return c.get("status") == TRUE, str(c.get("message") or "")
    return False, ""


def sks_proxy_for(sks: Mapping[str, Any] | None, now: float) -> float:
    """How long the SKS has had activators in its endpoints (ActivatorEndpointsPopulated True)."""
    for c in _status(sks).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "ActivatorEndpointsPopulated":
            if c.get("status") != TRUE:
                return 0.0
            since = parse_time(c.get("lastTransitionTime"))
            return now - since if since is not None else 0.0
    return 0.0


# ---- §4.3 steps 6-7 -----------------------------------------------------------------------


def compute_sks_mode(want: int, excess_burst_capacity: int, pa_inactive: bool) -> str:
    """Proxy when scaled to zero (want 0, or unknown with an inactive PA) or short of burst
    capacity (EBC < 0); Serve otherwise. kpa.go: an unknown want with an active PA (e.g. after an
    autoscaler restart) keeps serving directly."""
    if want == 0 or excess_burst_capacity < 0 or (want == SCALE_UNKNOWN and pa_inactive):
        return PROXY
    return SERVE


def compute_num_activators(ready: int, spec: DeciderSpec) -> int:
    """max(2, ceil((ready x TotalValue + max(TBC, 0)) / activatorCapacity)); 2 when TBC is 0."""
    if spec.target_burst_capacity == 0:
        return MIN_ACTIVATORS
    capacity = ready * spec.total_value
    if spec.target_burst_capacity > 0:
        capacity += spec.target_burst_capacity
    n = math.ceil(capacity / spec.activator_capacity)
    return int(max(MIN_ACTIVATORS, min(n, 2**31 - 1)))


# ---- §4.4 ---------------------------------------------------------------------------------


def _stable_window(ann: RevisionAnnotations, config: AutoscalerConfig) -> float:
    return ann.window if ann.window is not None else config.stable_window


def _tbc(ann: RevisionAnnotations, config: AutoscalerConfig) -> float:
    return ann.target_burst_capacity if ann.target_burst_capacity is not None else config.target_burst_capacity


def _unreachable(pa: Mapping[str, Any]) -> bool:
    return _spec(pa).get("reachability") == UNREACHABLE


def last_pod_retention(pa: Mapping[str, Any], config: AutoscalerConfig, ann: RevisionAnnotations) -> float:
    if _unreachable(pa):
        return 0.0
    if ann.scale_to_zero_pod_retention_period is not None:
        return ann.scale_to_zero_pod_retention_period
    return config.scale_to_zero_pod_retention_period


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What `scale()` decided: `desired` is the returned `want`; patch `/scale` iff `apply`.

    `needs_probe`: call again with the activator probe's result. `start_async_probe`: the probe
    failed, keep probing in the background (§4.4). `requeue_after`: reconcile the PA again then.
    """

    desired: int
    apply: bool
    requeue_after: float | None = None
    needs_probe: bool = False
    start_async_probe: bool = False


def apply_bounds(lo: int, hi: int, x: int) -> int:
    if x < lo:
        return lo
    if hi != 0 and x > hi:
        return hi
    return x


def plan_scale(
    pa: Mapping[str, Any],
    sks: Mapping[str, Any] | None,
    desired: int,
    config: AutoscalerConfig,
    now: float,
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE,
    activator_in_path: bool | None = None,
) -> ScalePlan:
    """Knative `scaler.scale` without its I/O. `activator_in_path` is the result of the activator
    probe, None when it has not run yet (then the plan may ask for it with `needs_probe`)."""
    st = PAStatus(copy.deepcopy(dict(_status(pa))), lambda: now)
    ann = annotations_of(pa)

    # 1. No decision yet and not activating: nothing to do.
    if desired < 0 and not st.is_activating():
        return ScalePlan(desired, False)

    # 2-4. Bounds, with initial scale as a floor until the target first reached it.
    lo, hi = scale_bounds(pa, config, ann)
    init = initial_scale(pa, config, ann)
    if init > 1 and not st.is_scale_target_initialized() and not _unreachable(pa):
        lo = max(lo, init)
    desired = apply_bounds(lo, hi, desired)

    # 5. The scale-to-zero gate.
    if desired != 0:
        return ScalePlan(desired, True)
    if not config.enable_scale_to_zero:
        return ScalePlan(1, True)

    if st.is_activating():
        deadline = ann.progress_deadline if ann.progress_deadline is not None else progress_deadline
        timeout = deadline + ACTIVATION_TIMEOUT_BUFFER
        # Stuck activating for longer than the progress deadline: give up and scale to 0.
        if st.can_fail_activation(now, timeout):
            return ScalePlan(0, True)
        return ScalePlan(SCALE_UNKNOWN, False, requeue_after=timeout)

    if st.is_active():
        window = _stable_window(ann, config)
        active_for = st.active_for(now)
        if active_for >= window:
            # Return 0 without applying: the PA is marked inactive and the SKS goes to Proxy.
            # An SKS already in Proxy mode will not change and trigger a reconcile, so re-enqueue.
            in_proxy = _spec(sks or {}).get("mode") == PROXY
            return ScalePlan(0, False, requeue_after=PROXY_REQUEUE if in_proxy else None)
        # Hold at most one pod for the rest of the idle window.
        return ScalePlan(1, True, requeue_after=window - active_for)

    # Inactive: scale to zero only once the activator is known to be in the path.
    if _tbc(ann, config) == -1:
        activator_in_path = True  # TBC -1 keeps the activator in the path for good
    elif activator_in_path is None:
        if not _status(pa).get("serviceName"):
            activator_in_path = False  # no public service to probe yet
        else:
            return ScalePlan(0, False, needs_probe=True)
    if not activator_in_path:
        return ScalePlan(0, False, start_async_probe=True)

    retention = last_pod_retention(pa, config, ann)
    grace = config.scale_to_zero_grace_period
    inactive_for = st.inactive_for(now)
    if inactive_for >= max(grace, retention):
        return ScalePlan(0, True)
    # The retention period is a hard deadline, whatever the network programming state.
    if retention > 0 and inactive_for < retention:
        return ScalePlan(0, False, requeue_after=retention - inactive_for)
    # Otherwise the revision must have been behind the activator for the grace period.
    remaining = grace - sks_proxy_for(sks, now)
    if remaining <= 0:
        return ScalePlan(0, True)
    return ScalePlan(0, False, requeue_after=remaining)


# ---- §4.3 step 9 --------------------------------------------------------------------------


def active_threshold(pa: Mapping[str, Any], config: AutoscalerConfig, st: PAStatus) -> int:
    """Pods needed to call the PA active: max(min, initial) until first initialised, then max(min, 1)."""
    ann = annotations_of(pa)
    lo, _ = scale_bounds(pa, config, ann)
    if not st.is_scale_target_initialized():
        return max(lo, initial_scale(pa, config, ann))
    return max(lo, 1)


def compute_status(pa: Mapping[str, Any], st: PAStatus, config: AutoscalerConfig, ready: int, want: int) -> None:
    """Fills actualScale / desiredScale and the Active and ScaleTargetInitialized conditions."""
    status = st.status
    old = status.get("desiredScale")
    status["actualScale"] = ready
    if want == SCALE_UNKNOWN and isinstance(old, int) and old >= 0:
        status["desiredScale"] = old  # an unknown decision does not erase the last known one
    else:
        status["desiredScale"] = want

    min_ready = active_threshold(pa, config, st)
    if ready >= min_ready and status.get("serviceName"):
        st.mark_scale_target_initialized()

    if want == 0 or min_ready == 0:
        if st.is_activating() and min_ready > 0:
            # Only while activating and past the progress deadline do we end up at 0 here.
            st.mark_inactive("TimedOut", "The target could not be activated.")
        else:
            st.mark_inactive(NO_TRAFFIC, "The target is not receiving traffic.")
    elif ready < min_ready:
        if want > 0 or not st.is_inactive():
            st.mark_activating("Queued", "Requests to the target are being buffered as resources are provisioned.")
        else:
            st.mark_inactive(NO_TRAFFIC, "The target is not receiving traffic.")
    elif want > 0 or not st.is_inactive():
        st.mark_active()


def status_conditions_summary(status: Mapping[str, Any]) -> dict[str, str]:
    """type -> status, for logs and tests."""
    return {str(c.get("type")): str(c.get("status")) for c in status.get("conditions") or [] if isinstance(c, Mapping)}
