"""Time-weighted concurrency and request counts for the autoscaler (CONTRACT.md §2.9).

A port of knative.dev/networking `stats.RequestStats`: concurrency is integrated
over time (an area), so a request that lived for 100 ms of a 1 s window counts
0.1, and requests waiting in the breaker count too (events are recorded before the
wait). Pure: every method takes the time, so tests feed a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestStats", "StatReport"]


@dataclass(frozen=True, slots=True)
class StatReport:
    average_concurrency: float
    average_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


class RequestStats:
    __slots__ = (
        "area_c",
        "area_p",
        "concurrency",
        "elapsed",
        "last_change",
        "proxied_concurrency",
        "proxied_requests",
        "requests",
    )

    def __init__(self, now: float) -> None:
        self.concurrency = 0
        self.proxied_concurrency = 0
        self.last_change = now
        self.requests = 0
        self.proxied_requests = 0
        self.area_c = 0.0
        self.area_p = 0.0
        self.elapsed = 0.0

    def _update(self, now: float) -> None:
        # Non-increasing times are ignored, as in Go (clock steps must not subtract area).
        if now > self.last_change:
            dt = now - self.last_change
            self.elapsed += dt
            self.area_c += self.concurrency * dt
            self.area_p += self.proxied_concurrency * dt
            self.last_change = now

    def request_in(self, now: float, proxied: bool) -> None:
        self._update(now)
        self.requests += 1
        self.concurrency += 1
        if proxied:
            self.proxied_requests += 1
            self.proxied_concurrency += 1

    def request_out(self, now: float, proxied: bool) -> None:
        self._update(now)
        self.concurrency -= 1
        if proxied:
            self.proxied_concurrency -= 1

    def report(self, now: float, period: float = 1.0) -> StatReport:
        """Closes the window: averages over its elapsed time, counts per `period` seconds."""
        self._update(now)
        elapsed = self.elapsed
        report = StatReport(
            average_concurrency=self.area_c / elapsed if elapsed > 0 else 0.0,
            average_proxied_concurrency=self.area_p / elapsed if elapsed > 0 else 0.0,
            request_count=self.requests / period,
            proxied_request_count=self.proxied_requests / period,
        )
        self.requests = 0
        self.proxied_requests = 0
        self.area_c = 0.0
        self.area_p = 0.0
        self.elapsed = 0.0
        return report
