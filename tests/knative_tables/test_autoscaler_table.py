"""Knative's `pkg/autoscaler/scaling/autoscaler_test.go` (at the commit CONTRACT.md pins), translated
case by case with Go's test names.

The metric client and the pod counter are fakes of the decider's inputs, as in Go; the decider is
Sluice's. `time.Now()` is a fixed time; Go's zero `time.Time{}` (TestAutoscalerScaleDownDelay*)
becomes Unix second 0, which keeps the 2 s delay slots aligned the same way. Go's gauge
assertions (metricstest) read `Autoscaler.gauges`, the values Sluice exports under the same names.
Like Go's `expectScale`, excess burst capacity is compared with a ±1 tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest

from autoscaler.resources import DeciderSpec
from autoscaler.scaling import INVALID_RESULT, Autoscaler, DeciderGauges, NoDataError, ScaleResult

STABLE_WINDOW = 60.0
TARGET_UTILIZATION = 0.75
ACTIVATOR_CAPACITY = 150.0
KEY = "in-this-namespace/a-revision-to-scale"
TICK_INTERVAL = 2.0
NOW = 1_700_000_000.25  # time.Now()


@dataclass
class MetricClient:
    """Go's fake metricClient: fixed values, and an optional error for every read."""

    stable_concurrency: float = 0.0
    panic_concurrency: float = 0.0
    stable_rps: float = 0.0
    panic_rps: float = 0.0
    error: Exception | None = None

    def set_stable_and_panic_concurrency(self, s: float, p: float) -> None:
        self.stable_concurrency, self.panic_concurrency = s, p

    def stable_and_panic_concurrency(self, key: str, now: float) -> tuple[float, float]:
        if self.error is not None:
            raise self.error
        return self.stable_concurrency, self.panic_concurrency

    def stable_and_panic_rps(self, key: str, now: float) -> tuple[float, float]:
        if self.error is not None:
            raise self.error
        return self.stable_rps, self.panic_rps


@dataclass
class FakePodCounter:
    ready_count: int = 0
    error: Exception | None = None

    def __call__(self) -> int:
        if self.error is not None:
            raise self.error
        return self.ready_count


def spec_of(
    target: float,
    tbc: float,
    metric: str = "concurrency",
    *,
    panic_threshold: float = 2.0,
    scale_down_delay: float = 0.0,
    reachable: bool = True,
    total: float | None = None,
    activator_capacity: float = ACTIVATOR_CAPACITY,
) -> DeciderSpec:
    return DeciderSpec(
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        scaling_metric=metric,
        target_value=target,
        total_value=target / TARGET_UTILIZATION if total is None else total,  # 75 % utilisation
        target_burst_capacity=tbc,
        activator_capacity=activator_capacity,
        panic_threshold=panic_threshold,
        stable_window=STABLE_WINDOW,
        scale_down_delay=scale_down_delay,
        initial_scale=1,
        activation_scale=0,
        reachable=reachable,
    )


def new_test_autoscaler(
    target: float, tbc: float, metrics: MetricClient, metric: str = "concurrency", start_in_panic: bool = False
) -> tuple[Autoscaler, FakePodCounter]:
    pc = FakePodCounter(2 if start_in_panic else 1)
    return Autoscaler(KEY, metrics, pc, spec_of(target, tbc, metric), lambda: NOW), pc


def expected_ebc(tot_cap: float, target_bc: float, recorded_concurrency: float, num_pods: float) -> int:
    return math.floor(tot_cap / TARGET_UTILIZATION * num_pods - target_bc - recorded_concurrency)


def expect_scale(a: Autoscaler, now: float, want: ScaleResult) -> None:
    got = a.scale(now)
    assert (got.desired_pod_count, got.scale_valid) == (want.desired_pod_count, want.scale_valid), got
    assert abs(got.excess_burst_capacity - want.excess_burst_capacity) <= 1, got


def delay_spec(reachable: bool = True, delay: float = 300.0) -> DeciderSpec:
    return spec_of(10.0, 0.0, panic_threshold=100.0, scale_down_delay=delay, reachable=reachable, total=0.0)


class TestAutoscalerScaleDownDelay:
    """Go's two subtests share one decider and one clock."""

    metrics = MetricClient()
    scaler = Autoscaler(KEY, metrics, FakePodCounter(), delay_spec(), lambda: 0.0)

    def test_simple(self) -> None:
        now = 0.0
        self.metrics.set_stable_and_panic_concurrency(40, 40)
        expect_scale(self.scaler, now + 2, ScaleResult(4, 0, True))
        # Five minutes at reduced concurrency: still within the delay.
        self.metrics.set_stable_and_panic_concurrency(0, 0)
        expect_scale(self.scaler, now + 300, ScaleResult(4, 0, True))
        # Five minutes and 2 s: scale down.
        expect_scale(self.scaler, now + 302, ScaleResult(0, 0, True))

    def test_gradual(self) -> None:
        now = 0.0
        self.metrics.set_stable_and_panic_concurrency(40, 40)
        expect_scale(self.scaler, now + 540, ScaleResult(4, 0, True))
        self.metrics.set_stable_and_panic_concurrency(30, 30)
        expect_scale(self.scaler, now + 600, ScaleResult(4, 0, True))  # 4 still dominates
        self.metrics.set_stable_and_panic_concurrency(0, 0)
        expect_scale(self.scaler, now + 660, ScaleResult(4, 0, True))  # still at 4
        expect_scale(self.scaler, now + 840, ScaleResult(3, 0, True))  # 4 scrolls out
        expect_scale(self.scaler, now + 900, ScaleResult(0, 0, True))  # everything scrolled out


def test_AutoscalerScaleDownDelayNotReachable() -> None:
    metrics = MetricClient()
    a = Autoscaler(KEY, metrics, FakePodCounter(), delay_spec(), lambda: 0.0)
    metrics.set_stable_and_panic_concurrency(40, 40)
    expect_scale(a, 2, ScaleResult(4, 0, True))
    metrics.set_stable_and_panic_concurrency(0, 0)
    expect_scale(a, 60, ScaleResult(4, 0, True))
    a.update(delay_spec(reachable=False))  # another revision took the traffic
    expect_scale(a, 2, ScaleResult(0, 0, True))


def test_AutoscalerScaleDownDelayZero() -> None:
    metrics = MetricClient()
    a = Autoscaler(KEY, metrics, FakePodCounter(), delay_spec(reachable=False, delay=0.0), lambda: 0.0)
    metrics.set_stable_and_panic_concurrency(40, 40)
    expect_scale(a, 0, ScaleResult(4, 0, True))
    # Zero delay scales down at once (a one-slot window would keep the max within the slot).
    metrics.set_stable_and_panic_concurrency(20, 20)
    expect_scale(a, 0.5, ScaleResult(2, 0, True))


def test_AutoscalerScaleDownDelay_updated_to_zero_keeps_the_window() -> None:
    """Not a Go case: issue 18's point 3. Go keeps the window made at creation while reachable, so
    a config update to delay 0 does not stop delaying (Sluice once required the current delay > 0)."""
    metrics = MetricClient()
    a = Autoscaler(KEY, metrics, FakePodCounter(), delay_spec(), lambda: 0.0)
    metrics.set_stable_and_panic_concurrency(40, 40)
    expect_scale(a, 2, ScaleResult(4, 0, True))
    a.update(delay_spec(delay=0.0))
    metrics.set_stable_and_panic_concurrency(0, 0)
    expect_scale(a, 60, ScaleResult(4, 0, True))
    expect_scale(a, 302, ScaleResult(0, 0, True))


def test_AutoscalerNoDataNoAutoscale() -> None:
    # Any error from the metric client, not only "no data", gives no decision (issue 18, point 1).
    metrics = MetricClient(error=RuntimeError("no metrics"))
    a, _ = new_test_autoscaler(10, 100, metrics)
    expect_scale(a, NOW, ScaleResult(0, 0, False))
    metrics.error = NoDataError(KEY)
    expect_scale(a, NOW, ScaleResult(0, 0, False))


def test_AutoscalerStartMetrics() -> None:
    a, _ = new_test_autoscaler(10, 100, MetricClient(50.0, 50.0), start_in_panic=True)
    assert a.gauges == DeciderGauges("concurrency", 0, 0.0, 0.0, 0.0, 0.0, panic_mode=1)


def test_AutoscalerMetrics() -> None:
    a, _ = new_test_autoscaler(10, 100, MetricClient(50.0, 50.0))
    assert a.gauges == DeciderGauges("concurrency", panic_mode=0)  # a non-panic start
    ebc = expected_ebc(10, 100, 50, 1)
    expect_scale(a, NOW, ScaleResult(5, ebc, True))
    assert a.gauges == DeciderGauges("concurrency", 5, float(ebc), 50.0, 50.0, a.spec.target_value, panic_mode=1)


def test_AutoscalerMetricsWithRPS() -> None:
    metrics = MetricClient(stable_rps=100.0, panic_rps=99.0)
    a, _ = new_test_autoscaler(10, 100, metrics, "rps")
    ebc = expected_ebc(10, 100, 99, 1)
    result = a.scale(NOW + 61)
    assert result == ScaleResult(10, ebc, True)
    assert result.gauges == a.gauges == DeciderGauges("rps", 10, float(ebc), 100.0, 99.0, 10.0, panic_mode=1)


def test_AutoscalerStableModeIncreaseWithConcurrencyDefault() -> None:
    metrics = MetricClient(50.0, 10.0)
    a, _ = new_test_autoscaler(10, 101, metrics)
    expect_scale(a, NOW, ScaleResult(5, expected_ebc(10, 101, 10, 1), True))
    metrics.stable_concurrency = 100
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 101, 10, 1), True))


def test_AutoscalerStableModeIncreaseWithRPS() -> None:
    metrics = MetricClient(stable_rps=50.0, panic_rps=50.0)
    a, _ = new_test_autoscaler(10, 101, metrics, "rps")
    expect_scale(a, NOW, ScaleResult(5, expected_ebc(10, 101, 50, 1), True))
    metrics.stable_rps, metrics.panic_rps = 100, 99
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 101, 99, 1), True))


def test_AutoscalerUnpanicAfterSlowIncrease() -> None:
    metrics = MetricClient(11, 25)  # an initial jump from 10 to 25 pods
    a, pc = new_test_autoscaler(1, 98, metrics)
    pc.ready_count = 10
    start = tm = NOW
    expect_scale(a, tm, ScaleResult(25, expected_ebc(1, 98, 25, 10), True))
    assert a.panic_time == tm
    # Half the stable window later, +1 pod per cycle: +15 pods.
    pc.ready_count = 25 + 15
    metrics.set_stable_and_panic_concurrency(30, 41)
    tm += STABLE_WINDOW / 2
    expect_scale(a, tm, ScaleResult(41, expected_ebc(1, 98, 41, 40), True))
    assert a.panic_time == start, "panic time should not have moved"
    # The end: panic ends, +30 pods.
    pc.ready_count = 25 + 30
    metrics.set_stable_and_panic_concurrency(50, 56)
    tm += STABLE_WINDOW / 2 + TICK_INTERVAL
    expect_scale(a, tm, ScaleResult(50, expected_ebc(1, 98, 56, 55), True))  # no longer in panic
    assert a.panic_time is None


def test_AutoscalerExtendPanicWindow() -> None:
    metrics = MetricClient(11, 25)
    a, pc = new_test_autoscaler(1, 98, metrics)
    pc.ready_count = 10
    tm = NOW
    expect_scale(a, tm, ScaleResult(25, expected_ebc(1, 98, 25, 10), True))
    assert a.panic_time == tm
    pc.ready_count = 25 + 15  # half a window later, still surging
    metrics.set_stable_and_panic_concurrency(30, 80)
    tm += STABLE_WINDOW / 2
    expect_scale(a, tm, ScaleResult(80, expected_ebc(1, 98, 80, 40), True))
    assert a.panic_time == tm


def test_AutoscalerStableModeDecrease() -> None:
    metrics = MetricClient(100.0, 100.0)
    a, pc = new_test_autoscaler(10, 98, metrics)
    pc.ready_count = 8
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 98, 100, 8), True))
    metrics.set_stable_and_panic_concurrency(50, 50)
    expect_scale(a, NOW, ScaleResult(5, expected_ebc(10, 98, 50, 8), True))


def test_AutoscalerStableModeNoTrafficScaleToZero() -> None:
    metrics = MetricClient(1, 0)
    a, _ = new_test_autoscaler(10, 75, metrics)
    expect_scale(a, NOW, ScaleResult(1, expected_ebc(10, 75, 0, 1), True))
    metrics.stable_concurrency = 0.0
    expect_scale(a, NOW, ScaleResult(0, expected_ebc(10, 75, 0, 1), True))


def test_AutoscalerActivationScale() -> None:
    metrics = MetricClient(0, 0)
    a, _ = new_test_autoscaler(10, 75, metrics)
    a.update(replace(a.spec, activation_scale=2))
    expect_scale(a, NOW, ScaleResult(0, expected_ebc(10, 75, 0, 1), True))
    metrics.stable_concurrency = 1.0
    expect_scale(a, NOW, ScaleResult(2, expected_ebc(10, 75, 0, 1), True))


def test_AutoscalerPanicModeExponentialTrackAndStabilize() -> None:
    # Traffic grows exponentially; each scaling brings concurrency back to the target (1.0), then it
    # grows again, and stabilises at 1296.
    metrics = MetricClient(6, 6)
    a, pc = new_test_autoscaler(1, 101, metrics)
    expect_scale(a, NOW, ScaleResult(6, expected_ebc(1, 101, 6, 1), True))
    tm = NOW
    pc.ready_count = 6
    metrics.set_stable_and_panic_concurrency(36, 36)
    expect_scale(a, tm, ScaleResult(36, expected_ebc(1, 101, 36, 6), True))
    assert a.panic_time == tm
    pc.ready_count = 36
    metrics.set_stable_and_panic_concurrency(216, 216)
    tm += 1
    expect_scale(a, tm, ScaleResult(216, expected_ebc(1, 101, 216, 36), True))
    assert a.panic_time == tm
    pc.ready_count = 216
    metrics.set_stable_and_panic_concurrency(1296, 1296)
    expect_scale(a, tm, ScaleResult(1296, expected_ebc(1, 101, 1296, 216), True))
    assert a.panic_time == tm
    pc.ready_count = 1296
    tm += 1
    expect_scale(a, tm, ScaleResult(1296, expected_ebc(1, 101, 1296, 1296), True))


def _panicking_since_5s(a: Autoscaler) -> None:
    a.panic_time = NOW - 5
    a.max_panic_pods = 5


def _spec_change(**changes: object) -> object:
    def prep(a: Autoscaler) -> None:
        a.update(replace(a.spec, **changes))  # type: ignore[arg-type]

    return prep


@pytest.mark.parametrize(
    ("target", "tbc", "metrics", "prep", "base_scale", "want_scale", "want_ebc"),
    [
        pytest.param(10, 100, MetricClient(), None, 1, 0, expected_ebc(10, 100, 0, 1),
                     id="AutoscalerNoDataAtZeroNoAutoscale"),
        pytest.param(10, 100, MetricClient(), None, 1, 0, expected_ebc(10, 100, 0, 1),
                     id="AutoscalerNoDataAtZeroNoAutoscaleWithExplicitEPs"),
        pytest.param(181, -1, MetricClient(21.0, 26), None, 1, 1, -1, id="AutoscalerStableModeUnlimitedTBC"),
        pytest.param(10, 0, MetricClient(50.0, 49), None, 1, 5, 0, id="Autoscaler0TBC"),
        pytest.param(10, 100, MetricClient(50.0, 50), None, 1, 5, expected_ebc(10, 100, 50, 1),
                     id="AutoscalerStableModeNoChange"),
        # Stable is used for the desired scale when it is the larger.
        pytest.param(1, 100, MetricClient(50, 30), _panicking_since_5s, 5, 50, expected_ebc(1, 100, 30, 5),
                     id="AutoscalerPanicStableLargerThanPanic"),
        # ... and panic when that is larger.
        pytest.param(1, 100, MetricClient(20, 30), _panicking_since_5s, 5, 30, expected_ebc(1, 100, 30, 5),
                     id="AutoscalerPanicStableLessThanPanic"),
        pytest.param(10, 100, MetricClient(50.0, 50), None, 5, 5, expected_ebc(10, 100, 50, 5),
                     id="AutoscalerStableModeNoChangeAlreadyScaled"),
        pytest.param(1, 1982, MetricClient(3, 3.1), _spec_change(max_scale_up_rate=1.1), 2, 3,
                     expected_ebc(1, 1982, 3.1, 2), id="AutoscalerStableModeIncreaseWithSmallScaleUpRate"),
        pytest.param(10, 1982, MetricClient(1, 1), _spec_change(max_scale_down_rate=1.1), 100, 90,
                     expected_ebc(10, 1982, 1, 100), id="AutoscalerStableModeDecreaseWithSmallScaleDownRate"),
        pytest.param(10, 1982, MetricClient(1, 1), _spec_change(max_scale_down_rate=1.1, reachable=False), 100, 1,
                     expected_ebc(10, 1982, 1, 100), id="AutoscalerStableModeDecreaseNonReachable"),
        # Panic concurrency takes precedence.
        pytest.param(10, 84, MetricClient(50, 100), None, 1, 10, expected_ebc(10, 84, 100, 1),
                     id="AutoscalerPanicModeDoublePodCount"),
    ],
)  # fmt: skip
def test_AutoscalerScale(
    target: float,
    tbc: float,
    metrics: MetricClient,
    prep: object,
    base_scale: int,
    want_scale: int,
    want_ebc: int,
) -> None:
    a, pc = new_test_autoscaler(target, tbc, metrics)
    pc.ready_count = base_scale
    if callable(prep):
        prep(a)
    expect_scale(a, NOW, ScaleResult(want_scale, want_ebc, True))


def test_AutoscalerPanicThenUnPanicScaleDown() -> None:
    metrics = MetricClient(100, 100)
    a, pc = new_test_autoscaler(10, 93, metrics)
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 93, 100, 1), True))
    pc.ready_count = 10
    panic_time = NOW
    metrics.panic_concurrency = 1000
    expect_scale(a, panic_time, ScaleResult(100, expected_ebc(10, 93, 1000, 10), True))
    # Traffic dropped: the scale stays while panicking.
    metrics.set_stable_and_panic_concurrency(1, 1)
    expect_scale(a, panic_time + 30, ScaleResult(100, expected_ebc(10, 93, 1, 10), True))
    # Down after the stable window.
    expect_scale(a, panic_time + 61, ScaleResult(1, expected_ebc(10, 93, 1, 10), True))


def test_AutoscalerRateLimitScaleUp() -> None:
    metrics = MetricClient(1000, 1001)
    a, pc = new_test_autoscaler(10, 61, metrics)
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 61, 1001, 1), True))  # needs 100, x10 only
    pc.ready_count = 10
    expect_scale(a, NOW, ScaleResult(100, expected_ebc(10, 61, 1001, 10), True))


def test_AutoscalerRateLimitScaleDown() -> None:
    metrics = MetricClient(1, 1)
    a, pc = new_test_autoscaler(10, 61, metrics)
    pc.ready_count = 100  # needs 1, but only /10
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 61, 1, 100), True))
    pc.ready_count = 10
    expect_scale(a, NOW, ScaleResult(1, expected_ebc(10, 61, 1, 10), True))


def test_CantCountPods() -> None:
    a, pc = new_test_autoscaler(10, 81, MetricClient(1000, 888))
    pc.error = RuntimeError("peaches-in-regalia")
    assert a.scale(NOW) == INVALID_RESULT


def test_AutoscalerUseOnePodAsMinimumIfEndpointsNotFound() -> None:
    a, pc = new_test_autoscaler(10, 81, MetricClient(1000, 888))
    pc.ready_count = 0
    # 1 x 10 is the rate limit when no ready pods are known.
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 81, 888, 0), True))


def test_AutoscalerUpdateTarget() -> None:
    metrics = MetricClient(100, 101)
    a, pc = new_test_autoscaler(10, 77, metrics)
    expect_scale(a, NOW, ScaleResult(10, expected_ebc(10, 77, 101, 1), True))
    pc.ready_count = 10
    # Go's literal leaves ScalingMetric empty (concurrency) and Reachable false.
    a.update(
        replace(
            spec_of(1, 71, "", total=1 / TARGET_UTILIZATION, activator_capacity=21, reachable=False),
        )
    )
    expect_scale(a, NOW, ScaleResult(100, expected_ebc(1, 71, 101, 10), True))


def _static_spec() -> DeciderSpec:
    return replace(spec_of(100, 11, "", panic_threshold=220, total=120, reachable=False), activator_capacity=0.0)


STATIC = MetricClient(10.0, 10.0, 10.0, 10.0)


def test_StartInPanicMode() -> None:
    pc = FakePodCounter()
    for i in range(2):
        pc.ready_count = i
        a = Autoscaler(KEY, STATIC, pc, _static_spec(), lambda: NOW)
        assert a.panic_time is None, f"created at scale {i} in panic mode"
        assert a.max_panic_pods == i
    pc.ready_count = 2
    a = Autoscaler(KEY, STATIC, pc, _static_spec(), lambda: NOW)
    assert a.panic_time is not None, "created at scale 2 without panic mode"
    assert a.max_panic_pods == 2


def test_NewFail() -> None:
    a = Autoscaler(KEY, STATIC, FakePodCounter(error=RuntimeError("starlight")), _static_spec(), lambda: NOW)
    assert a.max_panic_pods == 0
