"""Knative's `pkg/autoscaler/aggregation/bucketing_test.go` (at the commit CONTRACT.md pins),
translated case by case with Go's test names.

Sluice's buckets are always 1 s wide (CONTRACT.md §4.8: every bucket set Knative builds uses
`config.BucketSize` = 1 s), so Go's cases with a 5 s or 3 s granularity ("granularity = 5s" of
TestTimedFloat64BucketsSimple, TestTimedFloat64BucketsWindowUpdate3sGranularity) have no
counterpart. Go's `forEachBucket` test helper is translated below; it reads the ring the same way.
`time.Now()` becomes a fixed time with a fractional second.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from autoscaler.aggregation import (
    TimedFloat64Buckets,
    WeightedFloat64Buckets,
    _smoothing_coeff,
    round_to_n_digits,
)

NOW = 1_700_000_000.37  # any time.Now(): not on a second boundary
MIN_EXPONENT = 0.2


def for_each_bucket(b: TimedFloat64Buckets, now: float, acc: Callable[[int, float], None]) -> None:
    """Go's test helper: the newest `len - (now - lastWrite)` buckets, newest first."""
    now_s = math.floor(now)
    last = b._last_write
    n = b._nb - (now_s - last)
    si = last
    for _ in range(n):
        acc(si, b._buckets[si % b._nb])
        si -= 1


def bucket_sum(b: TimedFloat64Buckets, now: float) -> float:
    total = 0.0

    def add(_: int, v: float) -> None:
        nonlocal total
        total += v

    for_each_bucket(b, now, add)
    return total


@pytest.mark.parametrize(
    ("num_buckets", "want"), [(100, MIN_EXPONENT), (60, MIN_EXPONENT), (40, 0.20567), (6, 0.78456)]
)
def test_ComputeDecayMultiplier(num_buckets: int, want: float) -> None:
    # Go compares with a tolerance of weightPrecision (0.9999), which accepts anything; the
    # expected values are given to 5 digits, so that is the tolerance here.
    assert _smoothing_coeff(num_buckets) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    ("stats", "want"),
    [
        pytest.param(
            # activator scale from 0; +100 ms from scraping (same bucket); next; next-next-next
            [(0.0, 1.0), (0.1, 10.0), (1.0, 1.0), (3.0, 1.0)],
            {0: 11.0, 1: 1.0, 3: 1.0},
            id="granularity = 1s",
        ),
        pytest.param([], {}, id="empty"),
    ],
)
def test_TimedFloat64BucketsSimple(stats: list[tuple[float, float]], want: dict[int, float]) -> None:
    trunc1 = math.floor(NOW)
    b = TimedFloat64Buckets(120.0)
    assert b.is_empty(trunc1)
    for offset, value in stats:
        b.record(trunc1 + offset, value)
    got: dict[int, float] = {}

    def keep(t: int, v: float) -> None:
        if v > 0:  # zeros stand for "no data"
            got[t - trunc1] = v

    for_each_bucket(b, trunc1 + 60, keep)
    assert got == want


def test_TimedFloat64BucketsManyReps() -> None:
    trunc1 = math.floor(NOW)
    b = TimedFloat64Buckets(60.0)
    for p in range(5):
        trunc1 += 1
        for t in range(5):
            b.record(trunc1, float(p + t))
    # 10 + 15 + 20 + 25 + 30; read twice: reading does not consume
    assert bucket_sum(b, trunc1) == 100.0
    assert bucket_sum(b, trunc1) == 100.0


def test_TimedFloat64BucketsManyRepsWithNonMonotonicalOrder() -> None:
    start = math.floor(NOW)
    end = start
    b = TimedFloat64Buckets(60.0)
    for p, d in enumerate([0, 3, 2, 1, 4]):
        end = start + d
        for t in range(5):
            b.record(end, float(p + t))
    assert bucket_sum(b, end) == 100.0
    assert bucket_sum(b, end) == 100.0


def test_TimedFloat64BucketsWeightedAverage() -> None:
    now = NOW
    b = WeightedFloat64Buckets(5.0)
    b.record(now, 2)
    want = 2 * b.smoothing_coeff
    assert b.window_average(now) == want
    # One second later without writes.
    want *= 1 - b.smoothing_coeff
    assert b.window_average(now + 1) == want
    b.record(now + 1, 2)
    want += 2 * b.smoothing_coeff
    assert b.window_average(now + 1) == want
    # Fill the window with [2, 3, 4, 5, 6].
    for i in range(5):
        b.record(now + 2 + i, float(i + 2))
    m = b.smoothing_coeff
    want = (
        6 * m
        + 5 * m * (1 - m)
        + 4 * m * (1 - m) * (1 - m)
        + 3 * m * (1 - m) * (1 - m) * (1 - m)
        + 2 * m * (1 - m) * (1 - m) * (1 - m) * (1 - m)
    )
    assert b.window_average(now + 6) == want
    assert b.window_average(now + 16) == 0.0  # an empty window


def test_TimedFloat64BucketsWindowAverage() -> None:
    now = NOW
    b = TimedFloat64Buckets(5.0)
    # firstWrite is used: without it this would be 1/5 = 0.2.
    b.record(now, 1)
    assert b.window_average(now) == 1.0
    for i in range(1, 5):
        b.record(now + i, float(i + 1))
    assert b.window_average(now + 4) == 15.0 / 5
    assert b.window_average(now + 3.6) == 15.0 / 5  # `now` lags behind
    assert b.window_average(now + 6) == (15.0 - 1 - 2) / (5 - 2)  # a short hole
    assert b.window_average(now + 10) == 0.0  # a long hole
    b.record(now + 6, 91)  # write after a hole
    assert b.window_average(now + 6) == (15.0 - 1 - 2 + 91) / 5

    now += 60  # much farther
    b.record(now, 1984)
    assert b.window_average(now) == 1984.0
    b.record(now - 3, 4)  # an earlier time
    assert b.window_average(now) == (4.0 + 1984) / 4
    now += 1
    b.record(now, 5)
    assert b.window_average(now) == (4.0 + 1984 + 5) / 5
    b.record(now - 3, 10)  # an earlier time again
    assert b.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    b.record(now - 6, 10)  # too early: ignored
    assert b.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    b.record(now - 5, 10)  # exactly a window early: ignored
    assert b.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    b.record(now + 5, 10)  # silent for exactly `window`: cleared
    assert b.window_average(now + 5) == 10.0


def test_DescendingRecord() -> None:
    b = TimedFloat64Buckets(5.0)
    for i in range(8, -1, -1):
        b.record(NOW + i, 5)
    # A 5 every second, never twice in one second.
    assert b.window_average(NOW + 5) == 5.0


def test_TimedFloat64BucketsHoles() -> None:
    now = NOW
    b = TimedFloat64Buckets(5.0)
    for i in range(5):
        b.record(now + i, float(i + 1))
    assert bucket_sum(b, now + 4) == 15.0
    assert b.window_average(now + 4) == 15.0 / 5
    # A write at the 9th second zeroes seconds 5, 6 and 7.
    b.record(now + 8, 2.0)
    assert bucket_sum(b, now + 8) == 7.0  # [3] = 2 and [4] = 5


def test_WeightedFloat64BucketsResizeWindow() -> None:
    start = NOW
    b = WeightedFloat64Buckets(5.0)
    assert b.smoothing_coeff == pytest.approx(_smoothing_coeff(5))
    for i in range(6):  # fills the ring with a roll-over
        b.record(start + i, float(i + 1))
    now = start + 5
    assert bucket_sum(b, now) == 2.0 + 3 + 4 + 5 + 6
    assert round_to_n_digits(3, b.window_average(now)) == 5.812  # computed by hand in Go
    b.resize_window(10.0, now)
    assert len(b._buckets) == 10
    assert b.window == 10.0
    assert b.smoothing_coeff == pytest.approx(_smoothing_coeff(10))


def test_TimedFloat64BucketsResizeWindow() -> None:
    start = NOW
    b = TimedFloat64Buckets(5.0)
    for i in range(6):
        b.record(start + i, float(i + 1))
    now = start + 5
    want_initial = 2.0 + 3 + 4 + 5 + 6
    assert bucket_sum(b, now) == want_initial
    assert b.window_average(now) == want_initial / 5

    b.resize_window(10.0, now)  # grow
    assert len(b._buckets) == 10
    assert b.window == 10.0
    assert bucket_sum(b, now) == want_initial
    assert b.window_average(now) == want_initial / 5  # at most 5 buckets were known

    now += 1
    b.record(now, 7)
    want_with_update = want_initial + 7
    assert bucket_sum(b, now) == want_with_update
    assert b.window_average(now) == round_to_n_digits(6, want_with_update / 6)

    b.resize_window(4.0, now)  # shrink: the 2 oldest go
    assert len(b._buckets) == 4
    want_with_shrink = want_with_update - 2 - 3
    assert bucket_sum(b, now) == want_with_shrink
    assert b.window_average(now) == want_with_shrink / 4

    ring = b._buckets
    b.resize_window(4.0, now)  # same size: untouched
    assert b._buckets is ring


def test_TimedFloat64BucketsWindowUpdateNoOp() -> None:
    start = NOW - 60
    b = TimedFloat64Buckets(5.0)
    b.record(start, 19.82)
    assert b._first_write == b._last_write
    b.resize_window(10.0, NOW)  # nothing within the old window: back to "never written"
    assert b.last_write is not None and b._first_write < -(10**18)


def test_RoundToNDigits() -> None:
    assert round_to_n_digits(6, 3.6e-17) == 0.0
    assert round_to_n_digits(3, -3.6e-17) == 0.0
    assert round_to_n_digits(3, 0.0004) == 0.0
    assert round_to_n_digits(3, 1.2345) == 1.235
    assert round_to_n_digits(4, 1.2345) == 1.2345
    assert round_to_n_digits(6, 12345) == 12345.0


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1.2345675, 1.234568),  # issue 18: flooring gave 1.234567
        (2.0 / 3.0, 0.666667),  # the average of [1, 1, 0]; flooring gave 0.666666
        (-3.6e-17, 0.0),  # flooring gave -1e-06
        (-1.2345675, -1.234568),  # halves away from zero on both sides (Python's round: to even)
        (0.0000005, 0.000001),
        (-0.0000005, -0.000001),
    ],
)
def test_RoundToNDigits_issue18(value: float, want: float) -> None:
    assert round_to_n_digits(6, value) == want
