"""The concurrency reporter (CONTRACT.md §3.8; Go `handler/concurrency_reporter.go`).

Per revision, a time-weighted concurrency accumulator (the §2.9 algorithm, plain
in/out events only). Requests are counted from the moment they enter the timeout
handler, so time spent queued in the throttler counts as concurrency — that is
what makes the autoscaler scale a revision up from zero.

Pure: every method takes the time; the process feeds it `time.monotonic()` and the
tests a fake clock.
"""

from __future__ import annotations

from sluice.wire import Stat, WireStatMessage

from .revision import RevKey

__all__ = ["ConcurrencyReporter", "RevisionStats"]


class RevisionStats:
    __slots__ = ("area", "concurrency", "elapsed", "first", "last_change", "refs", "requests")

    def __init__(self, now: float) -> None:
        self.concurrency = 0
        self.last_change = now
        self.requests = 0
        self.area = 0.0
        self.elapsed = 0.0
        self.refs = 0  # requests in progress (Go's `refs`)
        self.first = 1  # offset for the immediate first-request report

    def _update(self, now: float) -> None:
        if now > self.last_change:
            dt = now - self.last_change
            self.elapsed += dt
            self.area += self.concurrency * dt
            self.last_change = now

    def request_in(self, now: float) -> None:
        self._update(now)
        self.requests += 1
        self.concurrency += 1
        self.refs += 1

    def request_out(self, now: float) -> None:
        self._update(now)
        self.concurrency -= 1
        self.refs -= 1

    def report(self, now: float) -> tuple[float, float]:
        """(average concurrency, request count) of the window, then a new window."""
        self._update(now)
        avg = self.area / self.elapsed if self.elapsed > 0 else 0.0
        count = float(self.requests)
        self.requests = 0
        self.area = 0.0
        self.elapsed = 0.0
        return avg, count


class ConcurrencyReporter:
    __slots__ = ("pod_name", "stats")

    def __init__(self, pod_name: str) -> None:
        self.pod_name = pod_name
        self.stats: dict[RevKey, RevisionStats] = {}

    def request_in(self, key: RevKey, now: float) -> tuple[RevisionStats, WireStatMessage | None]:
        """Records an arrival. The message, when not None, must be sent at once: the
        first request of a revision without a live accumulator triggers the fast
        scale-from-zero report `{concurrency 1, count 1}` (§3.8)."""
        stats = self.stats.get(key)
        msg = None
        if stats is None:
            stats = self.stats[key] = RevisionStats(now)
            msg = WireStatMessage(
                key[0],
                key[1],
                Stat(pod_name=self.pod_name, average_concurrent_requests=1.0, request_count=1.0),
            )
        stats.request_in(now)
        return stats, msg

    def report(self, now: float) -> list[WireStatMessage]:
        """The 1 s report of every revision (§3.8). Accumulators idle for the whole
        period with nothing in progress are deleted (their zero report still goes)."""
        out: list[WireStatMessage] = []
        for key, stats in list(self.stats.items()):
            avg, count = stats.report(now)
            first, stats.first = stats.first, 0
            if avg == 0 and stats.refs == 0:
                del self.stats[key]
            out.append(
                WireStatMessage(
                    key[0],
                    key[1],
                    Stat(
                        pod_name=self.pod_name,
                        average_concurrent_requests=max(avg - first, 0.0),
                        request_count=count - first,
                    ),
                )
            )
        return out
