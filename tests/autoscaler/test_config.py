"""config-autoscaler parsing (CONTRACT.md §4.11) and per-revision annotations (§4.12)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from autoscaler.annotations import RevisionAnnotations
from autoscaler.config import AutoscalerConfig, ConfigStore
from sluice.config import ConfigError
from sluice.local.data import KNATIVE_DIR

CONFIGMAPS = KNATIVE_DIR / "configmaps"  # the packaged copies of Knative's ConfigMaps


def _configmap(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CONFIGMAPS / name).read_text())
    return doc


def test_shipped_configmap_parses_to_the_defaults() -> None:
    cm = _configmap("autoscaler.yaml")
    assert AutoscalerConfig.from_configmap(cm["data"]) == AutoscalerConfig()
    # The `_example` block documents the defaults: feeding it as data changes nothing.
    example = yaml.safe_load(cm["data"]["_example"])
    assert len(example) >= 20
    assert AutoscalerConfig.from_configmap({k: str(v) for k, v in example.items()}) == AutoscalerConfig()


def test_defaults_match_the_contract_table() -> None:
    c = AutoscalerConfig()
    assert (c.container_concurrency_target_fraction, c.container_concurrency_target_default) == (0.7, 100)
    assert (c.rps_target_default, c.target_burst_capacity, c.stable_window) == (200, 211, 60)
    assert (c.panic_window_percentage, c.panic_threshold_percentage) == (10, 200)
    assert (c.max_scale_up_rate, c.max_scale_down_rate, c.activator_capacity) == (1000, 2, 100)
    assert (c.scale_to_zero_grace_period, c.scale_to_zero_pod_retention_period, c.scale_down_delay) == (
        30,
        0,
        0,
    )
    assert (c.initial_scale, c.min_scale, c.max_scale, c.max_scale_limit) == (1, 0, 0, 0)
    assert c.enable_scale_to_zero and not c.allow_zero_initial_scale
    assert c.pod_autoscaler_class == "kpa.autoscaling.knative.dev"


@pytest.mark.parametrize(
    ("data", "attr", "expected"),
    [
        ({"container-concurrency-target-percentage": "80"}, "container_concurrency_target_fraction", 0.8),
        # Legacy: a value in (0, 1] is already a fraction.
        ({"container-concurrency-target-percentage": "0.5"}, "container_concurrency_target_fraction", 0.5),
        ({"container-concurrency-target-percentage": "1"}, "container_concurrency_target_fraction", 1.0),
        ({"stable-window": "2m"}, "stable_window", 120.0),
        ({"stable-window": "6s"}, "stable_window", 6.0),
        ({"stable-window": "1h"}, "stable_window", 3600.0),
        ({"scale-down-delay": "1m30s"}, "scale_down_delay", 90.0),
        ({"target-burst-capacity": "-1"}, "target_burst_capacity", -1.0),
        ({"target-burst-capacity": "0"}, "target_burst_capacity", 0.0),
        ({"scale-to-zero-pod-retention-period": "1.5s"}, "scale_to_zero_pod_retention_period", 1.5),
        ({"enable-scale-to-zero": "false"}, "enable_scale_to_zero", False),
        ({"initial-scale": "0", "allow-zero-initial-scale": "true"}, "initial_scale", 0),
        ({"max-scale": "10", "max-scale-limit": "100"}, "max_scale", 10),
        ({"min-scale": "2"}, "min_scale", 2),
        (
            {"pod-autoscaler-class": "hpa.autoscaling.knative.dev"},
            "pod_autoscaler_class",
            "hpa.autoscaling.knative.dev",
        ),
    ],
)
def test_valid_values(data: dict[str, str], attr: str, expected: object) -> None:
    assert getattr(AutoscalerConfig.from_configmap(data), attr) == expected


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"stable-window": "5s"}, "stable-window"),
        ({"stable-window": "61m"}, "stable-window"),
        ({"stable-window": "60.5s"}, "stable-window"),
        ({"stable-window": "soon"}, "stable-window"),
        ({"scale-down-delay": "-1s"}, "scale-down-delay"),
        ({"scale-down-delay": "1500ms"}, "scale-down-delay"),
        ({"scale-to-zero-grace-period": "0s"}, "scale-to-zero-grace-period"),
        ({"scale-to-zero-pod-retention-period": "-1s"}, "scale-to-zero-pod-retention-period"),
        ({"target-burst-capacity": "-2"}, "target-burst-capacity"),
        ({"target-burst-capacity": "-0.5"}, "target-burst-capacity"),
        ({"container-concurrency-target-percentage": "0"}, "container-concurrency-target-percentage"),
        ({"container-concurrency-target-percentage": "101"}, "container-concurrency-target-percentage"),
        # 0.01 x 0.5 = 0.005 < 0.01 (TargetMin).
        (
            {"container-concurrency-target-default": "0.01", "container-concurrency-target-percentage": "50"},
            "container-concurrency-target-default",
        ),
        ({"requests-per-second-target-default": "0.001"}, "requests-per-second-target-default"),
        ({"activator-capacity": "0.5"}, "activator-capacity"),
        ({"max-scale-up-rate": "1"}, "max-scale-up-rate"),
        ({"max-scale-down-rate": "1.0"}, "max-scale-down-rate"),
        ({"panic-window-percentage": "0.5"}, "panic-window-percentage"),
        ({"panic-window-percentage": "101"}, "panic-window-percentage"),
        ({"initial-scale": "0"}, "initial-scale"),
        ({"initial-scale": "-1", "allow-zero-initial-scale": "true"}, "initial-scale"),
        ({"initial-scale": "3000000000"}, "initial-scale"),
        ({"min-scale": "-1"}, "min-scale"),
        ({"min-scale": "5", "max-scale": "3"}, "min-scale"),
        ({"max-scale-limit": "-1"}, "max-scale-limit"),
        ({"max-scale-limit": "10"}, "max-scale"),  # max-scale 0 (unbounded) is not allowed with a limit
        ({"max-scale": "11", "max-scale-limit": "10"}, "max-scale"),
        ({"enable-scale-to-zero": "yes"}, "enable-scale-to-zero"),
        ({"max-scale-up-rate": "fast"}, "max-scale-up-rate"),
    ],
)
def test_invalid_values_name_their_key(data: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        AutoscalerConfig.from_configmap(data)
    assert any(p.startswith(key) for p in exc.value.problems), exc.value.problems


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        AutoscalerConfig.from_configmap(
            {"stable-window": "1s", "max-scale-up-rate": "0.5", "target-burst-capacity": "-7"}
        )
    text = str(exc.value)
    for key in ("stable-window", "max-scale-up-rate", "target-burst-capacity"):
        assert key in text
    assert len(exc.value.problems) == 3


def test_store_keeps_previous_config_on_bad_update() -> None:
    store = ConfigStore()
    seen: list[AutoscalerConfig] = []
    store.on_change(seen.append)
    assert store.update({"stable-window": "120s"}) is None
    assert store.current.stable_window == 120.0
    err = store.update({"stable-window": "120s", "max-scale-down-rate": "1"})
    assert err is not None and "max-scale-down-rate" in str(err)
    assert store.current.stable_window == 120.0 and store.current.max_scale_down_rate == 2.0
    # An identical update is not a change; an empty ConfigMap restores the defaults.
    assert store.update({"stable-window": "2m"}) is None
    assert store.update({}) is None
    assert [c.stable_window for c in seen] == [120.0, 60.0]


# ---- annotations (§4.12) ----------------------------------------------------------------

A = "autoscaling.knative.dev/"


def test_annotations_absent_are_none() -> None:
    ann = RevisionAnnotations.parse({})
    assert ann.metric == "concurrency" and ann.pa_class == "kpa.autoscaling.knative.dev"
    assert ann.target is None and ann.window is None and ann.min_scale is None
    assert ann.metric_aggregation_algorithm == "linear" and ann.problems == ()


def test_annotations_typed_values_and_aliases() -> None:
    ann = RevisionAnnotations.parse(
        {
            A + "metric": "rps",
            A + "target": "12.5",
            A + "targetUtilizationPercentage": "85",
            A + "target-burst-capacity": "-1",
            A + "minScale": "1",
            A + "max-scale": "9",
            A + "initial-scale": "0",
            A + "activation-scale": "3",
            A + "window": "1m5s",
            A + "panicWindowPercentage": "20",
            A + "panic-threshold-percentage": "150",
            A + "scaleDownDelay": "5m",
            A + "scale-to-zero-pod-retention-period": "90s",
            A + "metricAggregationAlgorithm": "weightedExponential",
            "serving.knative.dev/progress-deadline": "2m",
        }
    )
    assert ann.problems == ()
    assert ann.metric == "rps" and ann.target == 12.5 and ann.target_utilization == 0.85
    assert ann.target_burst_capacity == -1.0
    assert (ann.min_scale, ann.max_scale, ann.initial_scale, ann.activation_scale) == (1, 9, 0, 3)
    assert (ann.window, ann.panic_window_percentage, ann.panic_threshold_percentage) == (65.0, 20.0, 150.0)
    assert (ann.scale_down_delay, ann.scale_to_zero_pod_retention_period) == (300.0, 90.0)
    assert ann.metric_aggregation_algorithm == "weighted-exponential"
    assert ann.progress_deadline == 120.0


def test_canonical_key_wins_over_alias() -> None:
    ann = RevisionAnnotations.parse({A + "min-scale": "2", A + "minScale": "7"})
    assert ann.min_scale == 2


@pytest.mark.parametrize(
    ("key", "value", "attr"),
    [
        ("target", "abc", "target"),
        ("target", "0.001", "target"),
        ("target", "inf", "target"),
        ("target", " 5", "target"),
        ("target-utilization-percentage", "0", "target_utilization"),
        ("target-utilization-percentage", "101", "target_utilization"),
        ("target-burst-capacity", "-2", "target_burst_capacity"),
        ("min-scale", "1.5", "min_scale"),
        ("min-scale", "-1", "min_scale"),
        ("max-scale", "4294967296", "max_scale"),
        ("max-scale", "1_000", "max_scale"),
        ("initial-scale", "one", "initial_scale"),
        ("activation-scale", "1", "activation_scale"),
        ("window", "5s", "window"),
        ("window", "2h", "window"),
        ("window", "6500ms", "window"),
        ("window", "60", "window"),
        ("panic-window-percentage", "0", "panic_window_percentage"),
        ("panic-threshold-percentage", "109", "panic_threshold_percentage"),
        ("panic-threshold-percentage", "1001", "panic_threshold_percentage"),
        ("scale-down-delay", "2h", "scale_down_delay"),
        ("scale-to-zero-pod-retention-period", "-1s", "scale_to_zero_pod_retention_period"),
    ],
)
def test_bad_annotation_falls_back_and_is_named(key: str, value: str, attr: str) -> None:
    ann = RevisionAnnotations.parse({A + key: value})
    assert getattr(ann, attr) is None
    assert len(ann.problems) == 1 and ann.problems[0].startswith(A + key)


def test_min_above_max_and_activation_above_max_are_rejected() -> None:
    ann = RevisionAnnotations.parse({A + "min-scale": "5", A + "max-scale": "3"})
    assert (ann.min_scale, ann.max_scale) == (None, None) and len(ann.problems) == 1
    ann = RevisionAnnotations.parse({A + "activation-scale": "5", A + "max-scale": "3"})
    assert ann.activation_scale is None and ann.max_scale == 3
