"""Knative's `pkg/autoscaler/metrics/collector_test.go` (at the commit CONTRACT.md pins),
translated with Go's test names.

Go ticks a collection's scrape loop through a manual ticker; here one tick is `scrape_once` (the
body of the loop), with a scrape interval long enough that the background loop never runs. The
scraper is a fake of the collector's input, as in Go; `time.Now()` is a fixed time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from autoscaler.aggregation import TimedFloat64Buckets, WeightedFloat64Buckets
from autoscaler.annotations import WEIGHTED_EXPONENTIAL
from autoscaler.collector import Collection, MetricCollector, ScraperFactory
from autoscaler.resources import MetricSpec
from autoscaler.scaling import NoDataError, NotCollectingError
from autoscaler.scraper import ScrapeError
from sluice.wire import Stat

NS, NAME = "test-namespace", "test-name"
KEY = f"{NS}/{NAME}"
DEFAULT_METRIC = MetricSpec(stable_window=60.0, panic_window=6.0, scrape_target="original-target")
NOW = 1_700_000_000.5
NEVER = 3600.0  # scrape interval: the background loop stays asleep, ticks are explicit


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeScraper:
    stat: Stat | None = None
    error: Exception | None = None
    url: str = ""

    async def scrape(self, window: float) -> Stat | None:
        if self.error is not None:
            raise self.error
        return self.stat


def scraper_factory(scraper: FakeScraper | None, error: Exception | None = None) -> ScraperFactory:
    def factory(key: str, spec: MetricSpec) -> FakeScraper | None:
        if error is not None:
            raise error
        return scraper

    return factory


class TestMetricCollectorCRUD:
    def test_error_on_creating_scraper(self) -> None:
        want = RuntimeError("factory failure")
        coll = MetricCollector(Clock(), scraper_factory(None, want))
        assert coll.create_or_update(NS, NAME, DEFAULT_METRIC) is want
        assert KEY not in coll  # nothing half-created

    def test_full_crud(self) -> None:
        scrapers = [FakeScraper(url="just-right")]
        coll = MetricCollector(Clock(), lambda key, spec: scrapers[-1], scrape_interval=NEVER)
        assert coll.create_or_update(NS, NAME, DEFAULT_METRIC) is None
        c = coll.collection(KEY)
        assert c is not None and c.spec == DEFAULT_METRIC

        updated = replace(DEFAULT_METRIC, scrape_target="new-target")
        scrapers.append(FakeScraper(url="slightly-off"))
        assert coll.create_or_update(NS, NAME, updated) is None
        c = coll.collection(KEY)
        assert c is not None and c.spec == updated
        assert isinstance(c.scraper, FakeScraper) and c.scraper.url == "slightly-off"
        assert type(c.concurrency) is TimedFloat64Buckets
        coll.delete(NS, NAME)

    def test_different_aggregation(self) -> None:
        special = replace(DEFAULT_METRIC, aggregation_algorithm=WEIGHTED_EXPONENTIAL)
        coll = MetricCollector(Clock(), scraper_factory(FakeScraper()), scrape_interval=NEVER)
        assert coll.create_or_update(NS, NAME, special) is None
        c = coll.collection(KEY)
        assert c is not None and isinstance(c.concurrency, WeightedFloat64Buckets)
        coll.delete(NS, NAME)


def _report() -> Stat:
    return Stat(pod_name="testPod", average_concurrent_requests=10, request_count=20)


async def test_MetricCollectorScraperMovingTime() -> None:
    clock = Clock()
    coll = MetricCollector(clock, scraper_factory(FakeScraper(_report())), scrape_interval=NEVER)
    coll.create_or_update(NS, NAME, DEFAULT_METRIC)
    for _ in range(3):
        await coll.scrape_once(KEY)
    clock.now += 1
    for _ in range(4):
        await coll.scrape_once(KEY)
    # 3 x 10 in the first second, 4 x 10 in the second: 70 / 2 (RPS: 140 / 2)
    assert coll.stable_and_panic_concurrency(KEY, clock.now) == (7 * 10 / 2, 7 * 10 / 2)
    assert coll.stable_and_panic_rps(KEY, clock.now) == (7 * 20 / 2, 7 * 20 / 2)
    await coll.close()


async def test_MetricCollectorScraper() -> None:
    clock = Clock()
    coll = MetricCollector(clock, scraper_factory(FakeScraper(_report())), scrape_interval=NEVER)
    coll.create_or_update(NS, NAME, DEFAULT_METRIC)
    for _ in range(3):  # three scrapes within one second
        await coll.scrape_once(KEY)
    now = clock.now
    assert coll.stable_and_panic_concurrency(KEY, now) == (3 * 10, 3 * 10)
    assert coll.stable_and_panic_rps(KEY, now) == (3 * 20, 3 * 20)
    for _ in range(2):  # five in all
        await coll.scrape_once(KEY)
    later = now + DEFAULT_METRIC.stable_window - 5
    assert coll.stable_and_panic_concurrency(KEY, later)[0] == 10 * 5
    assert coll.stable_and_panic_rps(KEY, later)[0] == 20 * 5
    # Deleting the metric: not collecting.
    coll.delete(NS, NAME)
    with pytest.raises(NotCollectingError):
        coll.stable_and_panic_concurrency(KEY, now)
    with pytest.raises(NotCollectingError):
        coll.stable_and_panic_rps(KEY, now)
    await coll.close()


async def test_MetricCollectorNoScraper() -> None:
    clock = Clock()
    coll = MetricCollector(clock, scraper_factory(None), scrape_interval=NEVER)
    coll.create_or_update(NS, NAME, replace(DEFAULT_METRIC, scrape_target=""))
    for _ in range(3):
        await coll.scrape_once(KEY)
        clock.now += 1
    now = clock.now
    # No scrape target: silence is zero load, not "no data".
    assert coll.stable_and_panic_concurrency(KEY, now) == (0.0, 0.0)
    assert coll.stable_and_panic_rps(KEY, now) == (0.0, 0.0)
    # Record() from outside the collector is read back.
    assert coll.record(KEY, now, Stat(pod_name="testPod", average_concurrent_requests=10.0, request_count=30.0))
    assert coll.stable_and_panic_concurrency(KEY, now)[0] == 10.0
    assert coll.stable_and_panic_rps(KEY, now)[0] == 30.0
    await coll.close()


def test_MetricCollectorNoDataError() -> None:
    coll = MetricCollector(Clock(), scraper_factory(FakeScraper(Stat(pod_name="testPod"))))
    coll.create_or_update(NS, NAME, DEFAULT_METRIC)
    # A scrape target and nothing recorded yet.
    with pytest.raises(NoDataError):
        coll.stable_and_panic_concurrency(KEY, NOW)
    with pytest.raises(NoDataError):
        coll.stable_and_panic_rps(KEY, NOW)


def test_MetricCollectorRecord() -> None:
    now = NOW
    old_time = now - 70
    coll = MetricCollector(Clock(now), scraper_factory(FakeScraper()))
    coll.create_or_update(NS, NAME, DEFAULT_METRIC)
    # A fresh collection holds nothing: an error.
    with pytest.raises(NoDataError):
        coll.stable_and_panic_concurrency(KEY, now)
    with pytest.raises(NoDataError):
        coll.stable_and_panic_rps(KEY, now)
    # The second record clears the first, outdated one; proxied values are subtracted.
    coll.record(KEY, old_time, Stat(pod_name="testPod", average_concurrent_requests=100, request_count=100))
    stat = Stat(
        pod_name="testPod",
        average_concurrent_requests=10 + 10,
        average_proxied_concurrent_requests=10,
        request_count=10 + 20,
        proxied_request_count=20,
    )
    coll.record(KEY, now, stat)
    stable, panic = coll.stable_and_panic_concurrency(KEY, now)
    assert stable == pytest.approx(10, abs=0.001) and panic == pytest.approx(10, abs=0.001)
    stable, panic = coll.stable_and_panic_rps(KEY, now)
    assert stable == pytest.approx(10, abs=0.001) and panic == pytest.approx(10, abs=0.001)


def test_DoubleWatch() -> None:
    coll = MetricCollector(Clock(), scraper_factory(None))
    coll.watch(lambda key: None)
    with pytest.raises(RuntimeError):
        coll.watch(lambda key: None)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ScrapeError("failed to get endpoints"), id="Failed to get endpoints scraper error"),
        pytest.param(ScrapeError("did not receive stat"), id="Did not receive stat scraper error"),
        pytest.param(RuntimeError("foo"), id="Other scraper error"),
    ],
)
async def test_MetricCollectorError(error: Exception) -> None:
    metric = MetricSpec(60.0, 6.0, "a-revision-to-scale-zhudex")
    coll = MetricCollector(Clock(), scraper_factory(FakeScraper(error=error)), scrape_interval=NEVER)
    events: list[str] = []
    coll.watch(events.append)
    coll.create_or_update("in-this-namespace", "a-revision-to-scale", metric)
    key = "in-this-namespace/a-revision-to-scale"
    await coll.scrape_once(key)
    assert events == [key]  # the error changed: the Metric is re-enqueued
    # ... and surfaced by CreateOrUpdate, which the reconciler calls.
    assert coll.create_or_update("in-this-namespace", "a-revision-to-scale", metric) is error
    coll.delete("in-this-namespace", "a-revision-to-scale")
    await coll.close()


def test_MetricCollectorAggregate() -> None:
    c = Collection(replace(DEFAULT_METRIC, stable_window=6.0, panic_window=2.0), None)
    now = NOW
    for i in range(10):
        c.record(now + i, Stat(pod_name="testPod", average_concurrent_requests=i + 5, request_count=i + 5))
    now += 9
    assert not c.concurrency.is_empty(now)
    assert c.concurrency.window_average(now) == 11.5  # (9 + ... + 14) / 6
    assert c.concurrency_panic.window_average(now) == 13.5  # (13 + 14) / 2
    assert c.rps.window_average(now) == 11.5 and c.rps_panic.window_average(now) == 13.5
