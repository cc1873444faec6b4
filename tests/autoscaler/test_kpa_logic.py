"""The pure KPA reconciler logic, table-driven against CONTRACT.md §4.2-§4.4 (no event loop)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autoscaler.conditions import ConditionManager, format_time, groom_transition_times, parse_time
from autoscaler.config import AutoscalerConfig
from autoscaler.kpa import (
    PROXY,
    SERVE,
    PAStatus,
    ScalePlan,
    compute_num_activators,
    compute_sks_mode,
    compute_status,
    is_controlled_by,
    make_metric,
    make_sks,
    metric_spec_differs,
    plan_scale,
    sks_proxy_for,
    sks_spec_differs,
)
from autoscaler.leaderelection import LeaderElectionConfig, holder_ip
from autoscaler.podaccessor import PodIndex, counts_by_state
from autoscaler.reconciler import DeploymentConfig, metric_spec_from_object
from autoscaler.resources import DeciderSpec, MetricSpec, make_metric_spec
from sluice.config import ConfigError

NOW = 1_700_000_000.0
CFG = AutoscalerConfig()


def ts(ago: float) -> str:
    return format_time(NOW - ago)


def pa(
    active: str | None = None,
    active_ago: float = 0.0,
    sti: str | None = None,
    annotations: dict[str, str] | None = None,
    service: str = "rev",
    reachability: str = "Reachable",
    **status: Any,
) -> dict[str, Any]:
    conds = []
    if active is not None:
        conds.append({"type": "Active", "status": active, "lastTransitionTime": ts(active_ago)})
    if sti is not None:
        conds.append({"type": "ScaleTargetInitialized", "status": sti, "lastTransitionTime": ts(100)})
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": "rev",
            "namespace": "ns",
            "uid": "pa-uid",
            "generation": 1,
            "labels": {"serving.knative.dev/revision": "rev"},
            "annotations": {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev", **(annotations or {})},
        },
        "spec": {
            "containerConcurrency": 0,
            "protocolType": "http1",
            "reachability": reachability,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rev-deployment"},
        },
        "status": {"serviceName": service, "metricsServiceName": "rev-private", "conditions": conds, **status},
    }


def sks(mode: str = PROXY, proxy_for: float | None = None) -> dict[str, Any]:
    conds = []
    if proxy_for is not None:
        conds.append({"type": "ActivatorEndpointsPopulated", "status": "True", "lastTransitionTime": ts(proxy_for)})
    return {"spec": {"mode": mode}, "status": {"conditions": conds}}


# ---- §4.3 steps 6-7 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "ebc", "inactive", "mode"),
    [
        (0, 10, False, PROXY),  # scaled to zero
        (3, -1, False, PROXY),  # short of burst capacity
        (3, 0, False, SERVE),
        (-1, 5, True, PROXY),  # unknown and inactive: stays behind the activator
        (-1, 5, False, SERVE),  # unknown but active (autoscaler restart): keep serving
        (1, -111, False, PROXY),  # the §4.6 initial EBC with defaults
    ],
)
def test_sks_mode(want: int, ebc: int, inactive: bool, mode: str) -> None:
    assert compute_sks_mode(want, ebc, inactive) == mode


def _spec(tbc: float, total: float = 100.0, capacity: float = 100.0) -> DeciderSpec:
    return DeciderSpec(1000, 2, "concurrency", total * 0.7, total, tbc, capacity, 2.0, 60, 0, 1, 0, True)


@pytest.mark.parametrize(
    ("ready", "tbc", "total", "capacity", "n"),
    [
        (0, 0, 100, 100, 2),  # TBC 0: the minimum
        (50, 0, 100, 100, 2),
        (0, 211, 100, 100, 3),  # ceil(211 / 100)
        (5, 211, 100, 100, 8),  # ceil((500 + 211) / 100)
        (3, -1, 10, 100, 2),  # unlimited TBC adds nothing: ceil(30 / 100) -> min 2
        (30, -1, 10, 100, 3),
        (1, 10, 10, 7, 3),  # ceil(20 / 7)
    ],
)
def test_num_activators(ready: int, tbc: float, total: float, capacity: float, n: int) -> None:
    assert compute_num_activators(ready, _spec(tbc, total, capacity)) == n


# ---- §4.4 scale() ---------------------------------------------------------------------------

G30 = AutoscalerConfig(scale_to_zero_grace_period=30.0)
NO_STZ = AutoscalerConfig(enable_scale_to_zero=False)
RET90 = AutoscalerConfig(scale_to_zero_pod_retention_period=90.0)
ANN_MIN2_MAX5 = {"autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "5"}
ANN_INIT3 = {"autoscaling.knative.dev/initial-scale": "3"}
ANN_TBC_UNLIMITED = {"autoscaling.knative.dev/target-burst-capacity": "-1"}
ANN_PD10 = {"serving.knative.dev/progress-deadline": "10s"}


@pytest.mark.parametrize(
    ("case", "the_pa", "the_sks", "desired", "config", "probe", "plan"),
    [
        # 1. no decision, not activating: nothing.
        ("unknown-active", pa("True", 5), sks(), -1, CFG, None, ScalePlan(-1, False)),
        ("unknown-inactive", pa("False", 5), sks(), -1, CFG, None, ScalePlan(-1, False)),
        # Activating with no decision: min-scale applies at once.
        (
            "unknown-activating-min",
            pa("Unknown", 5, annotations=ANN_MIN2_MAX5),
            sks(),
            -1,
            CFG,
            None,
            ScalePlan(2, True),
        ),
        # ...with min 0 it is the activation-timeout wait (600 s + 30 s).
        ("unknown-activating", pa("Unknown", 5), sks(), -1, CFG, None, ScalePlan(-1, False, requeue_after=630.0)),
        # 2-4. bounds.
        ("max", pa("True", 5, annotations=ANN_MIN2_MAX5), sks(), 9, CFG, None, ScalePlan(5, True)),
        ("min", pa("True", 5, annotations=ANN_MIN2_MAX5), sks(), 1, CFG, None, ScalePlan(2, True)),
        (
            "unreachable-min-0",
            pa("True", 100, annotations=ANN_MIN2_MAX5, reachability="Unreachable"),
            sks(SERVE),
            0,
            CFG,
            None,
            ScalePlan(0, False),
        ),
        # 3. initial scale is a floor until the target first reached it.
        (
            "initial-scale",
            pa("Unknown", 1, sti="Unknown", annotations=ANN_INIT3),
            sks(),
            1,
            CFG,
            None,
            ScalePlan(3, True),
        ),
        (
            "initial-scale-done",
            pa("True", 1, sti="True", annotations=ANN_INIT3),
            sks(),
            1,
            CFG,
            None,
            ScalePlan(1, True),
        ),
        # 5. scale to zero disabled: hold one pod.
        ("stz-disabled", pa("True", 100), sks(), 0, NO_STZ, None, ScalePlan(1, True)),
        # Activating: time out after progress deadline + 30 s.
        ("activation-timeout", pa("Unknown", 41, annotations=ANN_PD10), sks(), 0, CFG, None, ScalePlan(0, True)),
        (
            "activating-wait",
            pa("Unknown", 39, annotations=ANN_PD10),
            sks(),
            0,
            CFG,
            None,
            ScalePlan(-1, False, requeue_after=40.0),
        ),
        # Active: hold 1 for the rest of the stable window, then return 0 without applying.
        ("active-young", pa("True", 20), sks(SERVE), 0, CFG, None, ScalePlan(1, True, requeue_after=40.0)),
        ("active-old-serve", pa("True", 60), sks(SERVE), 0, CFG, None, ScalePlan(0, False)),
        ("active-old-proxy", pa("True", 60), sks(PROXY), 0, CFG, None, ScalePlan(0, False, requeue_after=3.0)),
        # Inactive: probe first...
        ("inactive-probe", pa("False", 5), sks(), 0, CFG, None, ScalePlan(0, False, needs_probe=True)),
        (
            "inactive-no-service",
            pa("False", 5, service=""),
            sks(),
            0,
            CFG,
            None,
            ScalePlan(0, False, start_async_probe=True),
        ),
        ("probe-failed", pa("False", 5), sks(), 0, CFG, False, ScalePlan(0, False, start_async_probe=True)),
        # ...then grace / retention.
        ("inactive-long", pa("False", 31), sks(proxy_for=0), 0, G30, True, ScalePlan(0, True)),
        ("proxy-long-enough", pa("False", 5), sks(proxy_for=30), 0, G30, True, ScalePlan(0, True)),
        ("proxy-too-short", pa("False", 5), sks(proxy_for=10), 0, G30, True, ScalePlan(0, False, requeue_after=20.0)),
        ("retention", pa("False", 40), sks(proxy_for=40), 0, RET90, True, ScalePlan(0, False, requeue_after=50.0)),
        ("retention-passed", pa("False", 90), sks(proxy_for=90), 0, RET90, True, ScalePlan(0, True)),
        # TBC -1: the activator is always in the path, no probe.
        ("tbc-unlimited", pa("False", 31, annotations=ANN_TBC_UNLIMITED), sks(), 0, G30, None, ScalePlan(0, True)),
    ],
)
def test_plan_scale(
    case: str,
    the_pa: dict[str, Any],
    the_sks: dict[str, Any],
    desired: int,
    config: AutoscalerConfig,
    probe: bool | None,
    plan: ScalePlan,
) -> None:
    assert plan_scale(the_pa, the_sks, desired, config, NOW, activator_in_path=probe) == plan


def test_sks_proxy_for() -> None:
    assert sks_proxy_for(sks(proxy_for=12), NOW) == 12
    assert sks_proxy_for(sks(), NOW) == 0
    off = {"status": {"conditions": [{"type": "ActivatorEndpointsPopulated", "status": "False"}]}}
    assert sks_proxy_for(off, NOW) == 0


# ---- §4.3 step 9 ----------------------------------------------------------------------------


def _status_after(p: dict[str, Any], ready: int, want: int, config: AutoscalerConfig = CFG) -> PAStatus:
    st = PAStatus(copy.deepcopy(p["status"]), lambda: NOW)
    st.initialize()
    compute_status(p, st, config, ready, want)
    return st


def _active(st: PAStatus) -> tuple[str, str]:
    c = st.get("Active")
    assert c is not None
    return c["status"], c.get("reason", "")


@pytest.mark.parametrize(
    ("the_pa", "ready", "want", "active", "sti"),
    [
        (pa(), 0, -1, ("Unknown", "Queued"), "Unknown"),  # new PA: activating
        (pa(), 1, -1, ("True", ""), "True"),  # target reached initial scale
        (pa(service=""), 1, -1, ("True", ""), "Unknown"),  # no public service yet: not initialised
        (pa("True", 5, sti="True"), 1, 0, ("False", "NoTraffic"), "True"),
        (pa("Unknown", 5, sti="Unknown"), 0, 0, ("False", "TimedOut"), "Unknown"),  # activation timed out
        (pa("False", 5, sti="True"), 0, 1, ("Unknown", "Queued"), "True"),  # scale from zero
        (pa("False", 5, sti="True"), 0, -1, ("False", "NoTraffic"), "True"),  # stays inactive
        (pa("False", 5, sti="True"), 1, -1, ("False", ""), "True"),  # inactive, unknown want: unchanged
        (pa("False", 5, sti="True"), 1, 1, ("True", ""), "True"),
        (
            pa("True", 5, sti="True", annotations={"autoscaling.knative.dev/min-scale": "3"}),
            2,
            3,
            ("Unknown", "Queued"),
            "True",
        ),
    ],
)
def test_active_condition(the_pa: dict[str, Any], ready: int, want: int, active: tuple[str, str], sti: str) -> None:
    st = _status_after(the_pa, ready, want)
    assert _active(st) == active
    assert st.status_of("ScaleTargetInitialized") == sti


def test_ready_summarises_dependents() -> None:
    st = _status_after(pa(), 1, 1)
    st.mark_sks_ready()
    assert st.status_of("Ready") == "True"
    st.mark_sks_not_ready("no endpoints")
    ready = st.get("Ready")
    assert ready is not None and (ready["status"], ready["reason"], ready["message"]) == (
        "Unknown",
        "NotReady",
        "no endpoints",
    )
    st.mark_inactive("NoTraffic", "The target is not receiving traffic.")
    ready = st.get("Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "NoTraffic")
    # A False dependent trumps a new Unknown one.
    st.mark_sks_not_ready("still none")
    ready = st.get("Ready")
    assert ready is not None and ready["status"] == "False"
    assert [c["type"] for c in st.conditions] == sorted(c["type"] for c in st.conditions)


def test_desired_scale_keeps_last_known_value() -> None:
    assert _status_after(pa(desiredScale=3), 3, -1).status["desiredScale"] == 3
    assert _status_after(pa(desiredScale=-1), 0, -1).status["desiredScale"] == -1
    assert _status_after(pa(desiredScale=3), 3, 0).status["desiredScale"] == 0
    assert _status_after(pa(), 2, 5).status["actualScale"] == 2


def test_transition_times_kept_when_unchanged() -> None:
    clock = [NOW]
    status: dict[str, Any] = {}
    cm = ConditionManager(status, ("A", "B"), lambda: clock[0])
    cm.initialize()
    cm.mark_true("A")
    first = copy.deepcopy(status)
    clock[0] += 100
    cm.mark_true("A")  # nothing but the time would change
    assert status == first
    # Flip back and forth within one reconcile: grooming restores the old time.
    new = copy.deepcopy(first)
    cm2 = ConditionManager(new, ("A", "B"), lambda: clock[0])
    cm2.mark_false("A", "X", "x")
    cm2.mark_true("A")
    groom_transition_times(first, new)
    a_old = next(c for c in first["conditions"] if c["type"] == "A")
    a_new = next(c for c in new["conditions"] if c["type"] == "A")
    assert a_new == a_old
    ready_new = next(c for c in new["conditions"] if c["type"] == "Ready")
    assert parse_time(ready_new["lastTransitionTime"]) == NOW  # Ready unknown -> unknown: unchanged


def test_parse_time() -> None:
    assert parse_time("2023-11-14T22:13:20Z") == NOW
    assert parse_time("2023-11-14T22:13:20.5Z") == NOW + 0.5
    assert parse_time("2023-11-14T23:13:20+01:00") == NOW
    assert parse_time("garbage") is None
    assert parse_time(None) is None


# ---- §4.2 objects -------------------------------------------------------------------------


def test_make_sks_and_metric_shapes() -> None:
    p = pa(annotations={"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/window": "10s"})
    s = make_sks(p, SERVE, 4)
    assert s["metadata"]["annotations"] == {"autoscaling.knative.dev/metric": "rps"}
    assert s["metadata"]["labels"] == {"serving.knative.dev/revision": "rev"}
    assert s["spec"] == {
        "mode": "Serve",
        "objectRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rev-deployment"},
        "protocolType": "http1",
        "numActivators": 4,
    }
    assert is_controlled_by(s, p)
    assert not is_controlled_by(s, {"metadata": {"uid": "other"}})
    assert not is_controlled_by({"metadata": {}}, p)
    m = make_metric(p, make_metric_spec(p, CFG))
    assert m["metadata"]["annotations"]["autoscaling.knative.dev/window"] == "10s"
    assert m["spec"] == {"stableWindow": 10_000_000_000, "panicWindow": 1_000_000_000, "scrapeTarget": "rev-private"}
    assert metric_spec_from_object(m) == MetricSpec(10.0, 1.0, "rev-private")
    # Server-side defaults / empty fields do not count as differences (no update storms).
    served = copy.deepcopy(s)
    served["spec"]["objectRef"]["namespace"] = ""
    assert not sks_spec_differs(served, s)
    assert sks_spec_differs(make_sks(p, PROXY, 4), s)
    assert not metric_spec_differs(m, copy.deepcopy(m))
    other = copy.deepcopy(m)
    other["spec"]["scrapeTarget"] = ""
    assert metric_spec_differs(other, m)


def test_tbc_unlimited_metric_has_no_scrape_target() -> None:
    p = pa(annotations=ANN_TBC_UNLIMITED)
    assert make_metric(p, make_metric_spec(p, CFG))["spec"]["scrapeTarget"] == ""


# ---- pods (§4.2) --------------------------------------------------------------------------


def _pod(name: str, phase: str, ready: bool = False, deleting: bool = False, ip: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": {"serving.knative.dev/revision": "rev"}}
    if deleting:
        meta["deletionTimestamp"] = ts(0)
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "podIP": ip,
            "startTime": ts(30),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pod_counts_and_candidates() -> None:
    pods = [
        _pod("a", "Pending"),
        _pod("b", "Running", ready=True, ip="10.0.0.2"),
        _pod("c", "Running", ready=True, deleting=True, ip="10.0.0.3"),
        _pod("d", "Running", ready=False, ip="10.0.0.4"),
        _pod("e", "Succeeded"),
    ]
    counts = counts_by_state(pods)
    assert (counts.ready, counts.not_ready, counts.pending, counts.terminating) == (1, 3, 1, 1)
    index = PodIndex()
    for p in pods:
        index.on_event("ADDED", None, p)
    acc = index.accessor("ns", "rev")
    assert acc.ready_count() == 1
    assert acc.pod_ips_split_by_age(20.0, NOW) == (["10.0.0.2"], [])
    assert acc.pod_ips_split_by_age(60.0, NOW) == ([], ["10.0.0.2"])
    index.on_event("DELETED", pods[1], None)
    assert acc.ready_count() == 0


# ---- configs ------------------------------------------------------------------------------


def test_deployment_config() -> None:
    assert DeploymentConfig.from_configmap({}).progress_deadline == 600.0
    assert DeploymentConfig.from_configmap({"progress-deadline": "2m"}).progress_deadline == 120.0
    with pytest.raises(ConfigError, match="progress-deadline"):
        DeploymentConfig.from_configmap({"progress-deadline": "soon"})


def test_leader_election_config() -> None:
    assert LeaderElectionConfig.from_configmap({}) == LeaderElectionConfig(1, 60.0, 40.0, 10.0)
    cfg = LeaderElectionConfig.from_configmap(
        {"buckets": "3", "lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"}
    )
    assert cfg == LeaderElectionConfig(3, 15.0, 10.0, 2.0)
    with pytest.raises(ConfigError) as ei:
        LeaderElectionConfig.from_configmap({"buckets": "11", "lease-duration": "5s"})
    assert "buckets" in str(ei.value) and "lease-duration" in str(ei.value)
    assert holder_ip("autoscaler-7d9f_10.1.2.3") == "10.1.2.3"
    assert holder_ip("") is None
