"""1 s bucket windows (CONTRACT.md §4.8) and the sliding max of the scale-down delay (§4.7 step 8).

Every expected number is worked out in the comments from the contract's formulas.
"""

from __future__ import annotations

import math

import pytest

from autoscaler.aggregation import MaxTimeWindow, TimedFloat64Buckets, WeightedFloat64Buckets


def test_linear_partial_windows_sums_and_gaps() -> None:
    b = TimedFloat64Buckets(5.0)  # B = 5 slots
    assert b.window_average(100) == 0.0 and b.is_empty(100)
    b.record(100.3, 10)  # first write: ring reset, firstWrite = lastWrite = 100
    # d = 0: total / min(100 - 100 + 1, 5) = 10 / 1
    assert b.window_average(100.9) == 10.0
    b.record(101.0, 20)
    # 30 / min(2, 5) = 15
    assert b.window_average(101) == 15.0
    b.record(101.7, 5)  # same second: summed into one bucket (scraper + activator)
    # 35 / 2 = 17.5
    assert b.window_average(101) == 17.5
    # d = 2 < 5: total minus slots 102..103 (zeros) over min(2, 5 - 2) buckets = 35 / 2
    assert b.window_average(103) == 17.5
    # d = 4: slots 102..105 leave; 105 mod 5 is second 100's slot (10): (35 - 10) / min(2, 5 - 4) = 25
    assert b.window_average(105) == 25.0
    # d = 5 >= window: 0, but not yet "empty" (empty = d > window)
    assert b.window_average(106) == 0.0 and not b.is_empty(106) and b.is_empty(107)


def test_linear_late_values_within_window_and_too_old() -> None:
    b = TimedFloat64Buckets(5.0)
    b.record(100, 10)
    b.record(101, 20)
    b.record(99, 3)  # 99 + 5 > 101: kept, firstWrite moves back to 99
    # (10 + 20 + 3) / min(101 - 99 + 1, 5) = 33 / 3 = 11
    assert b.window_average(101) == 11.0
    b.record(96, 100)  # 96 + 5 > 101 is false: a full window older than lastWrite, dropped
    assert b.window_average(101) == 11.0


def test_linear_ring_wraps_and_full_window() -> None:
    b = TimedFloat64Buckets(5.0)
    for t in range(100, 110):
        b.record(t, float(t - 99))  # 1, 2, ..., 10
    # The ring holds seconds 105..109 = 6 + 7 + 8 + 9 + 10 = 40 over min(10, 5) = 5 -> 8
    assert b.window_average(109) == 8.0
    # A gap of 2 s: slots 110, 111 (holding 105, 106) leave: (40 - 6 - 7) / min(10, 5 - 2) = 27 / 3 = 9
    assert b.window_average(111) == 9.0
    b.record(112, 1.0)  # clears 110..112 (6, 7, 8): total 40 - 21 + 1 = 20 over 5 slots -> 4
    assert b.window_average(112) == 4.0


def test_linear_reset_after_a_silent_window() -> None:
    b = TimedFloat64Buckets(5.0)
    b.record(100, 50)
    b.record(105, 7)  # 105 - 100 >= 5: everything cleared, firstWrite = 105
    assert b.window_average(105) == 7.0


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([1.0, 1.0, 0.0], 0.666667),  # 2 / 3: rounded (flooring gave 0.666666)
        ([2.0, 0.0, 0.0], 0.666667),
        ([1.0, 0.0, 0.0], 0.333333),
        ([1.234567, 1.234568], 1.234568),  # 1.2345675: half away from zero (flooring: 1.234567)
        ([0.3, -0.1, -0.2], 0.0),  # -9.25e-18 of float noise: 0 (flooring gave -1e-06)
    ],
)
def test_linear_result_is_rounded_to_6_digits_like_go(values: list[float], want: float) -> None:
    # Go (since v1.19) returns roundToNDigits(6, avg) = math.Round(avg * 1e6) / 1e6 (§4.8).
    b = TimedFloat64Buckets(60.0)
    for i, v in enumerate(values):
        b.record(100 + i, v)
    assert b.window_average(100 + len(values) - 1) == want


def test_seconds_not_milliseconds() -> None:
    # §7: a millisecond timestamp lands ~50,000 years ahead; afterwards every real (seconds) sample
    # is "a full window older than lastWrite" and dropped — the window is stuck.
    b = TimedFloat64Buckets(60.0)
    b.record(1_700_000_000_000, 5.0)
    b.record(1_700_000_000, 10.0)
    assert b.window_average(1_700_000_000) == 5.0  # the seconds sample never counted


def test_weighted_exponential() -> None:
    b = WeightedFloat64Buckets(60.0)
    # a = max(1 - 0.0001^(1/60), 0.2) = max(0.1423, 0.2) = 0.2
    assert b.smoothing_coeff == 0.2
    b.record(100, 10)
    b.record(101, 20)
    # newest first: 20 x 0.2 + 10 x 0.2 x 0.8 = 4 + 1.6 = 5.6
    assert b.window_average(101) == pytest.approx(5.6, abs=1e-12)
    # two empty seconds: m = 0.2 x 0.8^2 = 0.128 -> 20 x 0.128 + 10 x 0.1024 = 3.584
    assert b.window_average(103) == pytest.approx(3.584, abs=1e-12)
    assert b.window_average(162) == 0.0  # empty


def test_weighted_small_window_coefficient() -> None:
    b = WeightedFloat64Buckets(6.0)
    # a = 1 - 0.0001^(1/6) = 1 - 10^(-2/3) = 0.784557...
    assert b.smoothing_coeff == pytest.approx(1 - 10 ** (-2 / 3))
    b.record(100, 10)
    assert b.window_average(100) == pytest.approx(10 * b.smoothing_coeff)


def test_resize_window_keeps_newest_slots() -> None:
    b = TimedFloat64Buckets(4.0)
    for t, v in ((100, 1.0), (101, 2.0), (102, 3.0), (103, 4.0)):
        b.record(t, v)
    b.resize_window(2.0, now=103)
    # keeps 103 (4) and 102 (3): total 7; firstWrite = 103 - (4 - 1) = 100 -> 7 / min(4, 2) = 3.5
    assert b.window_average(103) == 3.5
    b.resize_window(4.0, now=103)
    # firstWrite = 103 - (2 - 1) = 102 -> 7 / min(2, 4) = 3.5
    assert b.window_average(103) == 3.5
    b.resize_window(6.0, now=200)  # nothing within the old window: reset
    assert b.window_average(200) == 0.0


def test_max_time_window() -> None:
    w = MaxTimeWindow(10.0, 2.0)  # ceil(10 / 2) = 5 slots, index = unix // 2
    w.record(100, 5)  # idx 50
    w.record(102, 3)  # idx 51
    w.record(108, 1)  # idx 54: 54 - 50 < 5, the 5 still counts
    assert w.current() == 5
    w.record(110, 1)  # idx 55: idx 50 expires; max(3, 1)
    assert w.current() == 3
    w.record(111, 0)  # idx 55 again: the larger (1) is kept, max still 3
    assert w.current() == 3
    w.record(112, 0)  # idx 56: idx 51 expires -> max of {55: 1, 56: 0}
    assert w.current() == 1
    w.record(130, 7)
    assert w.current() == 7


def test_max_time_window_odd_duration_rounds_up() -> None:
    w = MaxTimeWindow(3.0, 2.0)  # ceil(1.5) = 2 slots
    w.record(100, 9)  # idx 50
    w.record(102, 1)  # idx 51
    assert w.current() == 9
    w.record(104, 1)  # idx 52: 52 - 50 = 2 >= 2, expired
    assert w.current() == 1
    assert math.isclose(MaxTimeWindow(1.0, 2.0).current(), 0.0)
