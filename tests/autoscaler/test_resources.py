"""Decider spec, Metric spec and scale bounds from a PodAutoscaler (CONTRACT.md §4.2, §4.4, §4.5)."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.config import AutoscalerConfig
from autoscaler.resources import initial_scale, make_decider_spec, make_metric_spec, scale_bounds

A = "autoscaling.knative.dev/"
CFG = AutoscalerConfig()


def _pa(cc: int = 0, reachability: str = "", **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "rev",
            "namespace": "ns",
            "annotations": {A + k.replace("_", "-"): v for k, v in annotations.items()},
        },
        "spec": {"containerConcurrency": cc, "reachability": reachability},
        "status": {"metricsServiceName": "rev-private"},
    }


def _pa_ann(annotations: dict[str, str]) -> dict[str, Any]:
    pa = _pa()
    pa["metadata"]["annotations"] = {A + k.replace("_", "-"): v for k, v in annotations.items()}
    return pa


def test_defaults_cc_zero() -> None:
    s = make_decider_spec(_pa(), CFG)
    # total = container-concurrency-target-default 100; target = 100 x 0.7 = 70
    assert (s.scaling_metric, s.total_value) == ("concurrency", 100.0)
    assert s.target_value == pytest.approx(70.0)
    assert (s.panic_threshold, s.target_burst_capacity, s.activator_capacity) == (2.0, 211.0, 100.0)
    assert (s.max_scale_up_rate, s.max_scale_down_rate, s.stable_window, s.scale_down_delay) == (1000, 2, 60, 0)
    assert (s.initial_scale, s.activation_scale, s.reachable) == (1, 0, True)


@pytest.mark.parametrize(
    ("pa", "target", "total"),
    [
        (_pa(cc=10), 7.0, 10.0),  # 10 x 0.7
        (_pa(cc=10, target="5"), 3.5, 5.0),  # annotation below cc: 5 x 0.7
        (_pa(cc=10, target="50"), 7.0, 10.0),  # capped at cc = 10
        (_pa(target="50"), 35.0, 50.0),  # cc = 0: no cap
        (_pa(cc=10, target_utilization_percentage="50"), 5.0, 10.0),
        (_pa(metric="rps"), 140.0, 200.0),  # rps: 200 x fixed 0.7
        (_pa(cc=10, metric="rps", target="500"), 350.0, 500.0),  # no cc cap for rps
        (_pa(target="0.01", target_utilization_percentage="1"), 0.01, 0.01),  # max(0.01, 0.0001)
    ],
)
def test_metric_target(pa: dict[str, Any], target: float, total: float) -> None:
    s = make_decider_spec(pa, CFG)
    assert [s.target_value, s.total_value] == pytest.approx([target, total])


def test_annotation_overrides() -> None:
    s = make_decider_spec(
        _pa(
            panic_threshold_percentage="300",
            target_burst_capacity="-1",
            window="2m",
            scale_down_delay="30s",
            activation_scale="3",
            initial_scale="4",
        ),
        CFG,
    )
    assert (s.panic_threshold, s.target_burst_capacity, s.stable_window) == (3.0, -1.0, 120.0)
    assert (s.scale_down_delay, s.activation_scale, s.initial_scale) == (30.0, 3, 4)
    # bad annotation: config default
    assert make_decider_spec(_pa(window="forever"), CFG).stable_window == 60.0
    assert not make_decider_spec(_pa(reachability="Unreachable"), CFG).reachable


def test_initial_scale_and_bounds() -> None:
    assert initial_scale(_pa(initial_scale="0"), CFG) == 1  # 0 needs allow-zero-initial-scale
    allow = AutoscalerConfig(allow_zero_initial_scale=True, initial_scale=0)
    assert initial_scale(_pa(initial_scale="0"), allow) == 0
    assert initial_scale(_pa(), allow) == 0
    assert scale_bounds(_pa(min_scale="2", max_scale="5"), CFG) == (2, 5)
    assert scale_bounds(_pa(minScale="2"), AutoscalerConfig(max_scale=9)) == (2, 9)
    assert scale_bounds(_pa(reachability="Unreachable", min_scale="2"), CFG) == (0, 0)
    assert scale_bounds(_pa(), AutoscalerConfig(min_scale=1)) == (1, 0)


@pytest.mark.parametrize(
    ("annotations", "stable", "panic", "target"),
    [
        ({}, 60.0, 6.0, "rev-private"),  # 10 % of 60 s
        ({"window": "7s"}, 7.0, 1.0, "rev-private"),  # 0.7 s rounds to 1 s
        ({"window": "15s"}, 15.0, 2.0, "rev-private"),  # 1.5 s rounds half away from zero: 2 s
        ({"window": "6s", "panic_window_percentage": "1"}, 6.0, 1.0, "rev-private"),  # 0.06 s -> 0 -> min 1 s
        ({"panic_window_percentage": "25"}, 60.0, 15.0, "rev-private"),
        ({"target_burst_capacity": "-1"}, 60.0, 6.0, ""),  # activator always in path: no scraping
    ],
)
def test_metric_spec(annotations: dict[str, str], stable: float, panic: float, target: str) -> None:
    m = make_metric_spec(_pa_ann(annotations), CFG)
    assert (m.stable_window, m.panic_window, m.scrape_target) == (stable, panic, target)
    assert m.to_json()["stableWindow"] == int(stable * 1e9)  # integer nanoseconds (§7)


def test_metric_spec_aggregation_algorithm() -> None:
    assert make_metric_spec(_pa(metric_aggregation_algorithm="weightedExponential"), CFG).aggregation_algorithm == (
        "weighted-exponential"
    )
