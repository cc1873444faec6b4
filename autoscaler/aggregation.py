"""Time-bucketed windows (CONTRACT.md §4.8; Knative `pkg/autoscaler/aggregation`).

All buckets are 1 s wide (§4.8), so a bucket is identified by its Unix second and a ring slot by
`second mod B`. Times are float Unix seconds and are truncated (floored) to the second, like Go's
`time.Truncate(time.Second)` — never milliseconds (§7).

- `TimedFloat64Buckets`: values *summed* per second, averaged over the seconds of the window with
  Knative's partial-window rules (§7: "sums per second ... not a mean of samples"), the average
  rounded to 6 decimals half away from zero (Go's `math.Round`, §4.8).
- `WeightedFloat64Buckets`: same ring, exponentially weighted average.
- `MaxTimeWindow`: sliding maximum over `ceil(duration / granularity)` slots (scale-down delay,
  §4.7 step 8).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = [
    "MaxTimeWindow",
    "TimedFloat64Buckets",
    "WeightedFloat64Buckets",
    "go_round",
    "round_to_n_digits",
]

# Stands for Go's zero `time.Time` (year 1): earlier than any real write, so the first Record
# always looks like "no write for a whole window" and resets the ring.
_NEVER = -(1 << 62)

# Knative's weighted-exponential constants (bucketing.go).
_MIN_EXPONENT = 0.2
# Go's `1 - weightPrecision` (0.9999) is an exact constant expression: 0.0001 rounded once. The
# float subtraction 1.0 - 0.9999 would give 9.999999999998899e-05 and move α in its last bits.
_ONE_MINUS_WEIGHT_PRECISION = 0.0001


def go_round(value: float) -> float:
    """Go's math.Round: to the nearest integer, halves away from zero (Python's round() goes to
    even). `value - trunc(value)` is exact in binary floating point, so this matches Go bit for bit."""
    if not math.isfinite(value):
        return value
    t = math.copysign(float(math.trunc(value)), value)  # -0.4 -> -0.0, as Go
    if abs(value - t) >= 0.5:
        t += math.copysign(1.0, value)
    return t


def round_to_n_digits(n: int, value: float) -> float:
    """Go's roundToNDigits (bucketing.go since v1.19): math.Round(f*10^n) / 10^n."""
    p = 10.0**n
    return go_round(value * p) / p


# Knative's `precision`: window averages are rounded to 6 decimal places (§4.8).
_PRECISION = 6


def _num_buckets(window: float) -> int:
    return max(1, math.ceil(window))


class TimedFloat64Buckets:
    """Ring of 1 s buckets over `window` seconds; `window_average` is Knative's linear average."""

    __slots__ = ("_buckets", "_first_write", "_last_write", "_nb", "_total", "window")

    def __init__(self, window: float) -> None:
        self.window = float(window)
        self._nb = _num_buckets(window)
        self._buckets = [0.0] * self._nb
        self._first_write = _NEVER
        self._last_write = _NEVER
        self._total = 0.0

    @property
    def last_write(self) -> int | None:
        """Unix second of the newest bucket written, or None before the first write."""
        return None if self._last_write == _NEVER else self._last_write

    def record(self, t: float, value: float) -> None:
        bt = math.floor(t)
        last = self._last_write
        if bt != last:
            if bt + self.window > last:
                if self._first_write == _NEVER or self._first_write > bt:
                    self._first_write = bt
                if bt > last:
                    buckets = self._buckets
                    nb = self._nb
                    if bt - last >= self.window:
                        # No write for a whole window: start over (and restart partial averaging).
                        self._first_write = bt
                        for i in range(nb):
                            buckets[i] = 0.0
                        self._total = 0.0
                    else:
                        # Zero the seconds skipped since the last write, and the one written now.
                        for i in range(last + 1, bt + 1):
                            idx = i % nb
                            self._total -= buckets[idx]
                            buckets[idx] = 0.0
                    self._last_write = bt
                # else: older than lastWrite but within the window — added to its bucket below.
            else:
                return  # a full window older than the newest data: dropped
        self._buckets[bt % self._nb] += value
        self._total += value

    def is_empty(self, now: float) -> bool:
        """True when nothing was written within the window before `now` (§4.8 "Empty")."""
        return math.floor(now) - self._last_write > self.window

    def window_average(self, now: float) -> float:
        nt = math.floor(now)
        last = self._last_write
        d = nt - last
        if d <= 0:
            # +1: first and last write seconds are both inclusive.
            nb = min(last - self._first_write + 1, self._nb)
            return round_to_n_digits(_PRECISION, self._total / nb)
        if d < self.window:
            # Data stopped d seconds ago: the skipped seconds are not in the window any more.
            buckets = self._buckets
            ret = self._total
            for i in range(last + 1, nt + 1):
                ret -= buckets[i % self._nb]
            nb = min(last - self._first_write + 1, self._nb - d)
            return round_to_n_digits(_PRECISION, ret / nb)
        return 0.0

    def resize_window(self, window: float, now: float) -> None:
        """Knative's ResizeWindow (§4.8): keep the newest min(old, new) slots.

        `now` replaces Go's `time.Now()` in the "any data within the old window" test.
        """
        if window == self.window:
            return
        nb = _num_buckets(window)
        new_buckets = [0.0] * nb
        new_total = 0.0
        old_nb = self._nb
        if math.floor(now) - self._last_write <= self.window:
            t_idx = self._last_write
            for _ in range(min(nb, old_nb)):
                v = self._buckets[t_idx % old_nb]
                new_buckets[t_idx % nb] = v
                new_total += v
                t_idx -= 1
            # As in Go: the earliest second the old ring could have held data for.
            self._first_write = self._last_write - (old_nb - 1)
        else:
            self._first_write = _NEVER
        self.window = float(window)
        self._nb = nb
        self._buckets = new_buckets
        self._total = new_total


def _smoothing_coeff(nb: int) -> float:
    # a = max(1 - 0.0001^(1/B), 0.2): with a = 0.2, B ≥ 42 slots already carry ≥ 99.99 % weight.
    return max(1.0 - math.pow(_ONE_MINUS_WEIGHT_PRECISION, 1.0 / nb), _MIN_EXPONENT)


class WeightedFloat64Buckets(TimedFloat64Buckets):
    """Same ring; `window_average` weights the newest second by a, the one before by a(1-a), ..."""

    __slots__ = ("smoothing_coeff",)

    def __init__(self, window: float) -> None:
        super().__init__(window)
        self.smoothing_coeff = _smoothing_coeff(self._nb)

    def window_average(self, now: float) -> float:
        nt = math.floor(now)
        if self.is_empty(nt):
            return 0.0
        alpha = self.smoothing_coeff
        nb = self._nb
        count = nb
        multiplier = alpha
        if nt > self._last_write:
            # Seconds without data count as zeros: skip straight to a(1-a)^k.
            k = nt - self._last_write
            multiplier = alpha * math.pow(1.0 - alpha, k)
            count -= k
        start = self._last_write
        buckets = self._buckets
        ret = 0.0
        for i in range(count):
            ret += buckets[(start - i) % nb] * multiplier
            multiplier *= 1.0 - alpha
        return ret

    def resize_window(self, window: float, now: float) -> None:
        super().resize_window(window, now)
        self.smoothing_coeff = _smoothing_coeff(self._nb)


class MaxTimeWindow:
    """Maximum of the values recorded in the last `ceil(duration / granularity)` slots.

    Knative's `max.TimeWindow` (ascending-minima deque). Slot index = `unix_seconds(t) //
    granularity`; several records in one slot keep the larger. `current()` is the max as of the
    latest record (expiry happens on record, as in Go).
    """

    __slots__ = ("_entries", "_size", "granularity")

    def __init__(self, duration: float, granularity: float) -> None:
        self._size = max(1, math.ceil(duration / granularity))
        self.granularity = granularity
        # (index, value), indices ascending, values strictly descending.
        self._entries: deque[tuple[int, float]] = deque()

    def record(self, t: float, value: float) -> None:
        index = math.floor(t) // int(self.granularity)
        entries = self._entries
        # A smaller-or-equal older value can never be the maximum again.
        while entries and value >= entries[-1][1]:
            entries.pop()
        while entries and index - entries[0][0] >= self._size:
            entries.popleft()
        if entries and entries[-1][0] == index:
            value = max(value, entries.pop()[1])
        entries.append((index, value))

    def current(self) -> float:
        return self._entries[0][1] if self._entries else 0.0
