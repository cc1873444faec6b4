"""Knative's `pkg/autoscaler/scaling/multiscaler_test.go` (at the commit CONTRACT.md pins),
translated with Go's test names.

Go drives a fake UniScaler whose result each test sets, and a manual ticker. Here the deciders are
Sluice's own, fed by a fake metric client (the decider's input, as in Go's autoscaler tests) with
values chosen to give the result Go's fake returns (desired, excess burst capacity); a "tick" is
`tick_due` on a fake clock advanced by the 2 s interval. Ready pods: 2, total value 1, TBC 1, so
EBC = floor(2·1 − 1 − panic).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from autoscaler.resources import DeciderSpec
from autoscaler.scaling import MultiScaler, _same_sign
from sluice.wire import Stat

from .test_autoscaler_table import spec_of

NS, NAME = "a-ns", "a-rev"
KEY = f"{NS}/{NAME}"


def new_decider_spec(**changes: object) -> DeciderSpec:
    # Target 1, total 1, TBC 1: the initial EBC is int(1 x 1 - 1) = 0, Go's newDecider value.
    return replace(spec_of(1.0, 1.0, total=1.0), **changes)  # type: ignore[arg-type]


@dataclass
class Metrics:
    """(stable, panic) concurrency per key; a key in `errors` fails with that error."""

    values: dict[str, tuple[float, float]] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)

    def stable_and_panic_concurrency(self, key: str, now: float) -> tuple[float, float]:
        if key in self.errors:
            raise self.errors[key]
        return self.values.get(key, (0.0, 0.0))

    stable_and_panic_rps = stable_and_panic_concurrency


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.clock = Clock()
        self.ready = 2
        self.ms = MultiScaler(self.metrics, lambda ns, name: self.ready, self.clock)
        self.informed: list[tuple[str, int]] = []

    def create(self, name: str, spec: DeciderSpec) -> None:
        """Created before its pods are ready (as for a new revision): no restart panic (§4.7)."""
        self.ready = 0
        self.ms.create(NS, name, spec)
        self.ready = 2

    def watch(self) -> None:
        """Go's watchFunc: records the key and the desired scale Get() shows at that moment."""

        def fn(key: str) -> None:
            ns, name = key.split("/")
            d = self.ms.get(ns, name)
            assert d is not None
            self.informed.append((key, d.status.desired_scale))

        self.ms.watch(fn)

    def set_scale_result(self, desired: int, ebc: int, key: str = KEY) -> None:
        """Metric values for which the decider returns (desired, ebc) with 2 ready pods."""
        self.metrics.values[key] = (float(desired), float(2 - 1 - ebc))

    def tick(self) -> int:
        self.clock.now += 2.0
        return self.ms.tick_due()


def test_MultiScalerScaling() -> None:
    env = Env()
    env.set_scale_result(1, 1)
    assert env.ms.get(NS, NAME) is None  # NotFound before it exists
    env.watch()
    env.create(NAME, new_decider_spec())
    d = env.ms.get(NS, NAME)
    assert d is not None
    assert (d.status.desired_scale, d.status.excess_burst_capacity) == (-1, 0)

    assert env.tick() == 1
    assert env.informed == [(KEY, 1)]
    d = env.ms.get(NS, NAME)
    assert d is not None
    assert (d.status.desired_scale, d.status.excess_burst_capacity) == (1, 1)

    env.tick()  # nothing changed: no callback
    assert env.informed == [(KEY, 1)]

    env.ms.delete(NS, NAME)
    assert env.tick() == 0  # no more ticks
    assert env.informed == [(KEY, 1)]


def test_MultiscalerCreateTBC42() -> None:
    env = Env()
    env.create(NAME, new_decider_spec(initial_scale=2, target_burst_capacity=42.0, total_value=25.0))
    d = env.ms.get(NS, NAME)
    assert d is not None
    assert (d.status.desired_scale, d.status.excess_burst_capacity) == (-1, 50 - 42)
    env.ms.delete(NS, NAME)


def test_MultiscalerCreateTBCMinus1() -> None:
    env = Env()
    env.create(NAME, new_decider_spec(target_burst_capacity=-1.0))
    d = env.ms.get(NS, NAME)
    assert d is not None
    assert (d.status.desired_scale, d.status.excess_burst_capacity) == (-1, -1)
    env.ms.delete(NS, NAME)


def test_MultiScalerOnlyCapacityChange() -> None:
    env = Env()
    env.set_scale_result(1, 1)
    env.watch()
    env.create(NAME, new_decider_spec())
    env.tick()
    assert env.informed == [(KEY, 1)]
    env.set_scale_result(1, -1)  # only the sign of the excess capacity changes
    env.tick()
    assert env.informed == [(KEY, 1), (KEY, 1)]
    env.ms.delete(NS, NAME)
    env.tick()
    assert len(env.informed) == 2


def test_MultiScalerScaleToZero() -> None:
    env = Env()
    env.set_scale_result(0, 1)
    env.watch()
    env.create(NAME, new_decider_spec())
    env.tick()
    assert env.informed == [(KEY, 0)]
    env.ms.delete(NS, NAME)
    env.tick()
    assert env.informed == [(KEY, 0)]


def test_MultiScalerScaleFromZero() -> None:
    env = Env()
    env.set_scale_result(0, 1)
    env.watch()
    env.create(NAME, new_decider_spec())
    env.tick()  # Go sets the latest scale to 0 directly; here a tick at zero load does
    assert env.informed == [(KEY, 0)]
    env.set_scale_result(1, 1)
    env.ms.poke(KEY, Stat(pod_name="test-pod", average_concurrent_requests=1, request_count=1))
    # A tick without the clock moving.
    assert env.informed == [(KEY, 0), (KEY, 1)]
    env.ms.delete(NS, NAME)


def test_MultiScalerUpdate() -> None:
    env = Env()
    env.set_scale_result(0, 100)
    env.create(NAME, new_decider_spec(target_value=1.0))
    d = env.ms.get(NS, NAME)
    assert d is not None and d.spec.target_value == 1.0
    env.ms.update(NS, NAME, new_decider_spec(target_value=10.0))
    d = env.ms.get(NS, NAME)
    assert d is not None and d.spec.target_value == 10.0
    env.ms.delete(NS, NAME)
    with pytest.raises(KeyError):  # Go: NotFound
        env.ms.update(NS, NAME, new_decider_spec())


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        (1982, 1984, True),
        (-1984, -1988, True),
        (-1988, 2006, False),
        (-2006, 2009, False),
        (0, 1, True),  # 0 counts as positive
        (0, -42, False),
    ],
)
def test_SameSign(a: int, b: int, want: bool) -> None:
    assert _same_sign(a, b) is want


def test_MultiScaler_metric_error_spares_the_other_revisions() -> None:
    """Not a Go case: issue 18's point 1. In Go each decider has its own ticker goroutine and any
    metric error is "no decision" for that revision only; one failing revision must not cost the
    others their evaluation in Sluice's shared tick either."""
    env = Env()
    env.watch()
    for name in ("a", "b", "c"):
        env.create(name, new_decider_spec())
        env.set_scale_result(3, 1, key=f"{NS}/{name}")
    env.metrics.errors[f"{NS}/b"] = RuntimeError("scraper exploded")
    assert env.tick() == 3
    assert sorted(env.informed) == [(f"{NS}/a", 3), (f"{NS}/c", 3)]
    d = env.ms.get(NS, "b")
    assert d is not None and d.status.desired_scale == -1  # no decision: the status is kept
    gauges = env.ms.all_gauges()
    assert gauges[f"{NS}/a"].desired_pods == 3 and gauges[f"{NS}/b"].desired_pods == 0
