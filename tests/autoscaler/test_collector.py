"""The metric collector (CONTRACT.md §4.8): buckets fed by scrapes and activator stats."""

from __future__ import annotations

import asyncio
import math

import pytest

from autoscaler.aggregation import WeightedFloat64Buckets
from autoscaler.collector import MetricCollector
from autoscaler.resources import MetricSpec
from autoscaler.scaling import NoDataError, NotCollectingError
from autoscaler.scraper import ScrapeError
from sluice.wire import Stat

KEY = "ns/rev"
SPEC = MetricSpec(stable_window=60.0, panic_window=6.0, scrape_target="rev-private")


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_scrape_and_activator_stats_sum_per_second() -> None:
    clock = Clock(1_000.2)
    c = MetricCollector(clock)
    c.create_or_update("ns", "rev", SPEC)
    # scraper: 10 concurrent of which 4 proxied -> 6; rps 20 - 5 = 15
    scraped = Stat(
        pod_name="service-scraper",
        average_concurrent_requests=10,
        average_proxied_concurrent_requests=4,
        request_count=20,
        proxied_request_count=5,
    )
    assert c.record(KEY, 1_000.2, scraped)
    # activator at timestamp 0 -> stamped 1000 (this second): + 3 concurrency, + 7 rps
    assert c.record_wire_stat(KEY, Stat(pod_name="activator-1", average_concurrent_requests=3, request_count=7))
    # one second of data: sums 6 + 3 = 9 and 15 + 7 = 22, in both windows
    assert c.stable_and_panic_concurrency(KEY, 1_000.9) == (9.0, 9.0)
    assert c.stable_and_panic_rps(KEY, 1_000.9) == (22.0, 22.0)
    # next second only the scraper: stable (9 + 6) / 2 = 7.5
    c.record(KEY, 1_001.0, scraped)
    assert c.stable_and_panic_concurrency(KEY, 1_001.0) == (7.5, 7.5)


def test_windows_differ_between_stable_and_panic() -> None:
    c = MetricCollector(Clock())
    c.create_or_update("ns", "rev", SPEC)
    for t in range(1_000, 1_010):
        c.record(KEY, float(t), Stat(average_concurrent_requests=1.0 if t < 1_004 else 4.0))
    # stable: 4 x 1 + 6 x 4 = 28 over 10 s = 2.8; panic (6 s): 6 x 4 / 6 = 4
    assert c.stable_and_panic_concurrency(KEY, 1_009.0) == (2.8, 4.0)


def test_no_data_not_collecting_and_no_scrape_target() -> None:
    c = MetricCollector(Clock())
    with pytest.raises(NotCollectingError):
        c.stable_and_panic_concurrency(KEY, 1_000.0)
    assert not c.record(KEY, 1_000.0, Stat(average_concurrent_requests=1))  # no collection: dropped
    c.create_or_update("ns", "rev", SPEC)
    with pytest.raises(NoDataError):
        c.stable_and_panic_concurrency(KEY, 1_000.0)
    c.record(KEY, 1_000.0, Stat(average_concurrent_requests=2))
    assert c.stable_and_panic_concurrency(KEY, 1_060.0) == (0.0, 0.0)  # d = 60 = window: 0, not empty
    with pytest.raises(NoDataError):
        c.stable_and_panic_rps(KEY, 1_061.0)  # 61 > 60: empty
    # TBC = -1: no scrape target, silence is zero load, not "no data"
    c.create_or_update("ns", "other", MetricSpec(60.0, 6.0, ""))
    assert c.stable_and_panic_concurrency("ns/other", 1_000.0) == (0.0, 0.0)
    c.delete("ns", "other")
    assert "ns/other" not in c and len(c) == 1


def test_bad_stats_are_dropped_and_counted() -> None:
    clock = Clock(1_700_000_000.0)
    c = MetricCollector(clock)
    c.create_or_update("ns", "rev", SPEC)
    # §7: milliseconds would poison the window; refused and counted.
    assert not c.record_wire_stat(KEY, Stat(pod_name="a", average_concurrent_requests=5, timestamp=1_700_000_000_000))
    assert not c.record_wire_stat(KEY, Stat(pod_name="a", average_concurrent_requests=math.nan))
    assert c.dropped.counts == {"timestamp in the future": 1, "non-finite value": 1}
    # seconds timestamps (even a little in the past) are fine
    assert c.record_wire_stat(KEY, Stat(pod_name="a", average_concurrent_requests=5, timestamp=1_699_999_999))
    assert c.stable_and_panic_concurrency(KEY, 1_699_999_999.0) == (5.0, 5.0)


def test_update_resizes_and_algorithm_is_chosen_once() -> None:
    clock = Clock()
    c = MetricCollector(clock)
    c.create_or_update("ns", "rev", MetricSpec(60.0, 6.0, "t", "weighted-exponential"))
    coll = c.collection(KEY)
    assert coll is not None and isinstance(coll.concurrency, WeightedFloat64Buckets)
    c.create_or_update("ns", "rev", MetricSpec(120.0, 12.0, "t", "linear"))
    assert coll.concurrency.window == 120.0 and coll.concurrency_panic.window == 12.0
    assert isinstance(coll.concurrency, WeightedFloat64Buckets)


class FakeScraper:
    def __init__(self) -> None:
        self.result: Stat | Exception | None = None
        self.windows: list[float] = []

    async def scrape(self, window: float) -> Stat | None:
        self.windows.append(window)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_scrape_once_records_and_reports_error_changes() -> None:
    clock = Clock(1_000.0)
    scraper = FakeScraper()
    c = MetricCollector(clock, scraper_factory=lambda key, spec: scraper, scrape_interval=3600)
    informed: list[str] = []
    c.watch(informed.append)
    c.create_or_update("ns", "rev", SPEC)
    scraper.result = Stat(pod_name="service-scraper", average_concurrent_requests=8)
    await c.scrape_once(KEY)
    assert c.stable_and_panic_concurrency(KEY, 1_000.0) == (8.0, 8.0) and scraper.windows == [60.0]
    scraper.result = ScrapeError("pods exhausted")
    await c.scrape_once(KEY)
    await c.scrape_once(KEY)  # the same error again: no second notification
    assert informed == [KEY]
    assert c.create_or_update("ns", "rev", SPEC) is not None  # the last error is reported
    scraper.result = None  # scaled to zero: no stat, no error
    await c.scrape_once(KEY)
    assert informed == [KEY, KEY]
    await c.close()


async def test_collection_scrapes_on_its_own_every_interval() -> None:
    clock = Clock(1_000.0)
    scraper = FakeScraper()
    scraper.result = Stat(pod_name="service-scraper", average_concurrent_requests=2)
    c = MetricCollector(clock, scraper_factory=lambda key, spec: scraper, scrape_interval=0.02)
    c.create_or_update("ns", "rev", SPEC)
    c.create_or_update("ns", "idle", MetricSpec(60.0, 6.0, ""))  # no target: no scraper
    await asyncio.sleep(0.15)
    assert 3 <= len(scraper.windows) <= 9
    c.delete("ns", "rev")
    n = len(scraper.windows)
    await asyncio.sleep(0.06)
    assert len(scraper.windows) == n
    await c.close()
