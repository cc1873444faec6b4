"""The decider (CONTRACT.md §4.7) and the multiscaler (§4.6), with a fake clock.

Expected values are worked out from the contract's formulas in the comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from autoscaler.resources import DeciderSpec
from autoscaler.scaling import (
    Autoscaler,
    MultiScaler,
    NoDataError,
    PodsNotFoundError,
    ScaleResult,
)
from sluice.wire import Stat

KEY = "ns/rev"

BASE = DeciderSpec(
    max_scale_up_rate=1000.0,
    max_scale_down_rate=2.0,
    scaling_metric="concurrency",
    target_value=10.0,
    total_value=15.0,
    target_burst_capacity=20.0,
    activator_capacity=100.0,
    panic_threshold=2.0,
    stable_window=60.0,
    scale_down_delay=0.0,
    initial_scale=1,
    activation_scale=0,
    reachable=True,
)


@dataclass
class FakeMetrics:
    """Collector stand-in returning fixed (stable, panic) values per metric."""

    concurrency: tuple[float, float] = (0.0, 0.0)
    rps: tuple[float, float] = (0.0, 0.0)
    error: Exception | None = None
    calls: list[float] = field(default_factory=list)

    def stable_and_panic_concurrency(self, key: str, now: float) -> tuple[float, float]:
        self.calls.append(now)
        if self.error is not None:
            raise self.error
        return self.concurrency

    def stable_and_panic_rps(self, key: str, now: float) -> tuple[float, float]:
        if self.error is not None:
            raise self.error
        return self.rps


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _scaler(
    ready: int, metrics: FakeMetrics, spec: DeciderSpec = BASE, now: float = 1_000.0, at_creation: int = 0
) -> Autoscaler:
    """A decider created while `at_creation` pods were ready (0: no restart panic), then `ready`."""
    pods = [at_creation]
    scaler = Autoscaler(KEY, metrics, lambda: pods[0], spec, Clock(now))
    pods[0] = ready
    return scaler


@pytest.mark.parametrize(
    ("name", "spec", "ready", "stable", "panic", "desired", "ebc"),
    [
        # R=5, maxDown=floor(5/2)=2, dspc=ceil(25/10)=3, dppc=3, 3/5 < 2: stable 3;
        # EBC = floor(5 x 15 - 20 - 25) = 30
        ("steady", BASE, 5, 25.0, 25.0, 3, 30),
        # dspc = ceil(10.000001 / 10) = 2 (maxDown 2); EBC = floor(5 x 15 - 20 - 10) = 45
        ("ceil", BASE, 5, 10.000001, 10.0, 2, 45),
        # R=10, dspc=1 but maxDown=floor(10/2)=5: desired 5; EBC floor(150 - 20 - 5) = 125
        ("max scale-down rate", BASE, 10, 5.0, 5.0, 5, 125),
        # unreachable: maxDown = 0 -> 1
        ("unreachable", replace(BASE, reachable=False), 10, 5.0, 5.0, 1, 125),
        # up-rate 2: maxUp = ceil(2 x 3) = 6 < dspc = 10; dppc = 4, 4/3 < 2; EBC floor(45 - 20 - 40) = -15
        ("max scale-up rate", replace(BASE, max_scale_up_rate=2.0), 3, 100.0, 40.0, 6, -15),
        # ceil(1.1 x 2) = 3 (never stuck at the current size); dppc = 2, 2/2 < 2
        ("up-rate ceil", replace(BASE, max_scale_up_rate=1.1), 2, 100.0, 20.0, 3, -10),
        # no pods: R = 1, maxDown = floor(1/2) = 0, dspc = 0; EBC uses raw ready: floor(0 - 20 - 0) = -20
        ("to zero", BASE, 0, 0.0, 0.0, 0, -20),
        ("tbc 0", replace(BASE, target_burst_capacity=0.0), 5, 25.0, 25.0, 3, 0),
        ("tbc -1", replace(BASE, target_burst_capacity=-1.0), 5, 25.0, 25.0, 3, -1),
        # activation scale 3: dspc = ceil(1/10) = 1 -> raised to 3; dppc = 1, 1/1 < 2
        ("activation scale", replace(BASE, activation_scale=3), 0, 1.0, 1.0, 3, -21),
        # ... but only with some demand: dspc = 0 stays 0
        ("activation scale idle", replace(BASE, activation_scale=3), 0, 0.0, 0.0, 0, -20),
        # activation scale 1 is no adjustment
        ("activation scale 1", replace(BASE, activation_scale=1), 0, 1.0, 1.0, 1, -21),
        # stable > panic: stable decides (R=4, dspc=8 within [2, 4000], dppc=2, 2/4 < 2)
        ("stable wins", BASE, 4, 80.0, 20.0, 8, 20),
    ],
)
def test_decider_table(
    name: str, spec: DeciderSpec, ready: int, stable: float, panic: float, desired: int, ebc: int
) -> None:
    result = _scaler(ready, FakeMetrics(concurrency=(stable, panic)), spec).scale(1_000.0)
    assert result == ScaleResult(desired, ebc, True), name


def test_rps_metric_uses_rps_values() -> None:
    spec = replace(BASE, scaling_metric="rps", target_value=140.0, total_value=200.0)
    metrics = FakeMetrics(concurrency=(1e6, 1e6), rps=(700.0, 700.0))
    # R=5: dspc = ceil(700/140) = 5; dppc 5, 5/5 < 2. EBC = floor(5 x 200 - 20 - 700) = 280
    assert _scaler(5, metrics, spec).scale(1_000.0) == ScaleResult(5, 280, True)


def test_invalid_when_no_data_or_pod_count_fails() -> None:
    assert not _scaler(1, FakeMetrics(error=NoDataError())).scale(1_000.0).scale_valid

    def broken() -> int:
        raise RuntimeError("lister down")

    assert not Autoscaler(KEY, FakeMetrics(), broken, BASE, Clock()).scale(1_000.0).scale_valid

    def not_found() -> int:
        raise PodsNotFoundError

    # NotFound counts as 0 ready pods: valid, desired 0
    assert Autoscaler(KEY, FakeMetrics(), not_found, BASE, Clock()).scale(1_000.0) == ScaleResult(0, -20, True)


def test_panic_enter_hold_extend_and_leave() -> None:
    metrics = FakeMetrics()
    a = _scaler(2, metrics)
    assert not a.panicking
    # R=2, maxDown=1. dspc = ceil(10/10) = 1, dppc = ceil(50/10) = 5; 5/2 = 2.5 >= 2: panic at 1000;
    # desired = max(1, 5) = 5 = maxPanicPods
    metrics.concurrency = (10.0, 50.0)
    assert a.scale(1_000.0).desired_pod_count == 5 and a.panicking and a.panic_time == 1_000.0
    # dppc = 3, 3/2 = 1.5 < 2: still panicking (1000 + 60 < 1002 is false), never scale down: 5
    metrics.concurrency = (10.0, 30.0)
    assert a.scale(1_002.0).desired_pod_count == 5
    # over the threshold again at 1030: panic extended to 1030 + 60
    metrics.concurrency = (10.0, 40.0)  # dppc 4, 4/2 = 2 >= 2
    assert a.scale(1_030.0).desired_pod_count == 5 and a.panic_time == 1_030.0
    metrics.concurrency = (10.0, 10.0)
    assert a.scale(1_090.0).desired_pod_count == 5  # 1030 + 60 < 1090 is false
    # 1090 < 1091: un-panic, maxPanicPods = 0, desired = stable = max(1, maxDown 1) = 1
    assert a.scale(1_091.0).desired_pod_count == 1 and not a.panicking and a.max_panic_pods == 0


def test_panic_grows_max_panic_pods() -> None:
    metrics = FakeMetrics(concurrency=(10.0, 50.0))
    a = _scaler(2, metrics)
    assert a.scale(1_000.0).desired_pod_count == 5
    metrics.concurrency = (10.0, 90.0)  # dppc 9 > 5
    assert a.scale(1_002.0).desired_pod_count == 9 and a.max_panic_pods == 9


def test_restart_with_many_pods_starts_in_panic() -> None:
    # §7: 5 ready pods at creation -> panic since creation (t=1000), maxPanicPods = 5.
    metrics = FakeMetrics(concurrency=(0.0, 0.0))
    a = _scaler(5, metrics, now=1_000.0, at_creation=5)
    assert a.panicking and a.max_panic_pods == 5
    # no history: dspc = 0 -> clamp to maxDown = floor(5/2) = 2, but panic holds 5
    assert a.scale(1_002.0).desired_pod_count == 5
    assert a.scale(1_060.0).desired_pod_count == 5  # 1000 + 60 < 1060 is false
    assert a.scale(1_061.0).desired_pod_count == 2  # panic over, rate-limited scale-down
    # 0 or 1 pod: normal start
    assert not _scaler(5, metrics, at_creation=1).panicking
    assert not _scaler(5, metrics, at_creation=0).panicking


def test_scale_down_delay() -> None:
    # delay 4 s -> ceil(4 / 2) = 2 slots of 2 s. R=10, maxDown=5.
    spec = replace(BASE, scale_down_delay=4.0)
    metrics = FakeMetrics(concurrency=(100.0, 100.0))  # dspc = 10; dppc 10, 10/10 < 2
    a = _scaler(10, metrics, spec)
    assert a.scale(1_000.0).desired_pod_count == 10  # slot 500: 10
    metrics.concurrency = (60.0, 60.0)  # dspc = 6
    assert a.scale(1_002.0).desired_pod_count == 10  # slot 501: max(10, 6)
    assert a.scale(1_004.0).desired_pod_count == 6  # slot 502: slot 500 expired
    # unreachable revisions are not delayed (and maxDown = 0)
    b = _scaler(10, FakeMetrics(concurrency=(100.0, 100.0)), replace(spec, reachable=False))
    assert b.scale(1_000.0).desired_pod_count == 10
    b._metric_client = FakeMetrics(concurrency=(60.0, 60.0))
    assert b.scale(1_002.0).desired_pod_count == 6


def test_scale_down_delay_window_is_fixed_at_creation() -> None:
    metrics = FakeMetrics(concurrency=(100.0, 100.0))
    a = _scaler(10, metrics)  # created without delay
    a.update(replace(BASE, scale_down_delay=60.0))
    a.scale(1_000.0)
    metrics.concurrency = (60.0, 60.0)
    assert a.scale(1_002.0).desired_pod_count == 6  # no window exists: no delay


# ---- multiscaler (§4.6) --------------------------------------------------------------


def _multi(ready: dict[str, int], metrics: FakeMetrics, clock: Clock) -> tuple[MultiScaler, list[str]]:
    m = MultiScaler(metrics, lambda ns, name: ready.get(f"{ns}/{name}", 0), clock)
    informed: list[str] = []
    m.watch(informed.append)
    return m, informed


def test_multiscaler_initial_status() -> None:
    clock = Clock()
    m, _ = _multi({KEY: 0}, FakeMetrics(), clock)
    spec = replace(BASE, target_burst_capacity=211.0, total_value=100.0)
    d = m.create("ns", "rev", spec)
    # EBC = int(initialScale x TotalValue - TBC) = 1 x 100 - 211 = -111
    assert (d.status.desired_scale, d.status.excess_burst_capacity) == (-1, -111)
    assert m.create("ns", "rev", BASE) is d  # idempotent
    m.create("ns", "a", replace(BASE, target_burst_capacity=-1.0))
    m.create("ns", "b", replace(BASE, target_burst_capacity=0.0))
    assert m.get("ns", "a") is not None and m.get("ns", "a").status.excess_burst_capacity == -1  # type: ignore[union-attr]
    assert m.get("ns", "b").status.excess_burst_capacity == 0  # type: ignore[union-attr]


def test_multiscaler_informs_on_scale_or_ebc_sign_change() -> None:
    clock = Clock()
    metrics = FakeMetrics(concurrency=(25.0, 25.0))
    ready: dict[str, int] = {}
    m, informed = _multi(ready, metrics, clock)
    m.create("ns", "rev", BASE)  # EBC = 1 x 15 - 20 = -5; 0 ready pods at creation: no panic
    ready[KEY] = 5
    assert m.tick(KEY, 1_000.0) == ScaleResult(3, 30, True)
    assert informed == [KEY]  # desired -1 -> 3 (and EBC sign)
    metrics.concurrency = (25.0, 26.0)  # EBC 29: same sign, same desired
    m.tick(KEY, 1_002.0)
    assert informed == [KEY]
    assert m.get("ns", "rev").status.excess_burst_capacity == 29  # type: ignore[union-attr]
    metrics.concurrency = (25.0, 60.0)  # EBC floor(75 - 20 - 60) = -5: sign flips; dppc 6, 6/5 < 2
    m.tick(KEY, 1_004.0)
    assert informed == [KEY, KEY]
    metrics.error = NoDataError()  # invalid: status kept, nobody told
    m.tick(KEY, 1_006.0)
    assert informed == [KEY, KEY] and m.get("ns", "rev").status.desired_scale == 3  # type: ignore[union-attr]


def test_multiscaler_poke_only_at_zero_with_traffic() -> None:
    clock = Clock()
    metrics = FakeMetrics(concurrency=(0.0, 0.0))
    ready = {KEY: 0}
    m, informed = _multi(ready, metrics, clock)
    m.create("ns", "rev", BASE)
    m.poke(KEY, Stat(average_concurrent_requests=1.0))  # desired is -1, not 0: no evaluation
    assert metrics.calls == []
    m.tick(KEY, 1_000.0)  # -> 0
    assert m.get("ns", "rev").status.desired_scale == 0  # type: ignore[union-attr]
    m.poke(KEY, Stat(average_concurrent_requests=0.0))
    assert len(metrics.calls) == 1
    metrics.concurrency = (1.0, 1.0)
    clock.now = 1_000.5
    m.poke(KEY, Stat(average_concurrent_requests=1.0))  # evaluated at once: 0 -> 1
    assert metrics.calls[-1] == 1_000.5 and m.get("ns", "rev").status.desired_scale == 1  # type: ignore[union-attr]
    m.poke("ns/unknown", Stat(average_concurrent_requests=1.0))  # ignored
    assert informed == [KEY, KEY]  # -1 -> 0, 0 -> 1


def test_multiscaler_ticks_every_two_seconds_and_update_delete() -> None:
    clock = Clock(1_000.0)
    metrics = FakeMetrics(concurrency=(25.0, 25.0))
    ready: dict[str, int] = {}
    m, _ = _multi(ready, metrics, clock)
    m.create("ns", "rev", BASE)
    ready[KEY] = 5
    assert m.tick_due(1_001.9) == 0
    assert m.tick_due(1_002.0) == 1
    assert m.tick_due(1_003.0) == 0
    assert m.tick_due(1_009.0) == 1  # late: one tick, no catch-up burst; next at 1010
    assert m.tick_due(1_010.0) == 1
    m.update("ns", "rev", replace(BASE, target_value=5.0))  # dspc = ceil(25/5) = 5
    assert m.tick(KEY, 1_011.0).desired_pod_count == 5
    with pytest.raises(KeyError):
        m.update("ns", "other", BASE)
    m.delete("ns", "rev")
    assert m.get("ns", "rev") is None and len(m) == 0
    with pytest.raises(RuntimeError):
        m.watch(lambda key: None)
