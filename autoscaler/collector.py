"""The metric collector (CONTRACT.md §4.8; Knative `pkg/autoscaler/metrics/collector.go`).

One *collection* per Metric `<ns>/<name>` holds four 1 s bucket sets (concurrency and RPS, each over
the stable and the panic window). Scrapes (every 1 s, `scraper.py`) and activator stats (websocket,
`statserver.py`) are recorded into the same buckets: values arriving for the same second are
*summed* (§7). The decider reads `stable_and_panic_concurrency` / `stable_and_panic_rps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from sluice.wire import Stat

from .aggregation import TimedFloat64Buckets, WeightedFloat64Buckets
from .annotations import WEIGHTED_EXPONENTIAL
from .dropped import DroppedPayloads
from .resources import MetricSpec
from .scaling import NoDataError, NotCollectingError

__all__ = [
    "SCRAPE_INTERVAL",
    "Collection",
    "MetricCollector",
    "StatsScraper",
    "finite",
]

logger = logging.getLogger("autoscaler.collector")

SCRAPE_INTERVAL = 1.0  # §4.8

# A websocket stat stamped further ahead than this is refused: a millisecond timestamp (§7) would
# otherwise put the revision's lastWrite ~50,000 years ahead and silently drop every later sample.
# Go has no such guard; it only ever affects payloads that are wrong anyway.
MAX_FUTURE_SKEW = 60.0


class StatsScraper(Protocol):
    async def scrape(self, window: float) -> Stat | None:
        """One revision-wide stat, None when there is nothing to scrape; raises on failure."""
        ...


ScraperFactory = Callable[[str, MetricSpec], "StatsScraper | None"]


def _buckets(window: float, algorithm: str) -> TimedFloat64Buckets:
    if algorithm == WEIGHTED_EXPONENTIAL:
        return WeightedFloat64Buckets(window)
    return TimedFloat64Buckets(window)


def finite(stat: Stat) -> bool:
    """The four values recorded (§4.8) are finite numbers."""
    return (
        math.isfinite(stat.average_concurrent_requests)
        and math.isfinite(stat.average_proxied_concurrent_requests)
        and math.isfinite(stat.request_count)
        and math.isfinite(stat.proxied_request_count)
    )


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and str(a) == str(b)


class Collection:
    """The buckets of one revision and the state of its scraping."""

    __slots__ = (
        "concurrency",
        "concurrency_panic",
        "last_error",
        "rps",
        "rps_panic",
        "scraper",
        "spec",
        "task",
    )

    def __init__(self, spec: MetricSpec, scraper: StatsScraper | None) -> None:
        # The algorithm comes from an annotation of the revision, hence immutable (collector.go).
        algo = spec.aggregation_algorithm
        self.spec = spec
        self.concurrency = _buckets(spec.stable_window, algo)
        self.concurrency_panic = _buckets(spec.panic_window, algo)
        self.rps = _buckets(spec.stable_window, algo)
        self.rps_panic = _buckets(spec.panic_window, algo)
        self.scraper = scraper
        self.last_error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def update(self, spec: MetricSpec, scraper: StatsScraper | None, now: float) -> None:
        self.spec = spec
        self.scraper = scraper
        self.concurrency.resize_window(spec.stable_window, now)
        self.concurrency_panic.resize_window(spec.panic_window, now)
        self.rps.resize_window(spec.stable_window, now)
        self.rps_panic.resize_window(spec.panic_window, now)

    def record(self, now: float, stat: Stat) -> None:
        # Proxied requests were already counted by the activator: subtract to avoid counting twice.
        concurrency = stat.average_concurrent_requests - stat.average_proxied_concurrent_requests
        self.concurrency.record(now, concurrency)
        self.concurrency_panic.record(now, concurrency)
        rps = stat.request_count - stat.proxied_request_count
        self.rps.record(now, rps)
        self.rps_panic.record(now, rps)


class MetricCollector:
    """All collections of this replica, keyed "<ns>/<name>"; implements `scaling.MetricClient`.

    When created inside a running event loop, each collection with a scraper scrapes every
    `scrape_interval` in its own task (Go: one goroutine per collection). `watch()` registers the
    callback told when a collection's last scrape error changes (re-enqueue the Metric, §4.8).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        scraper_factory: ScraperFactory | None = None,
        dropped: DroppedPayloads | None = None,
        scrape_interval: float = SCRAPE_INTERVAL,
    ) -> None:
        self._clock = clock
        self._scraper_factory = scraper_factory
        self.dropped = dropped if dropped is not None else DroppedPayloads()
        self.scrape_interval = scrape_interval
        self._collections: dict[str, Collection] = {}
        self._watcher: Callable[[str], None] | None = None
        # Told (key, seconds) after every scrape attempt, when metrics are on (autoscaler/telemetry.py).
        self.scrape_observer: Callable[[str, float], None] | None = None

    def __len__(self) -> int:
        return len(self._collections)

    def __contains__(self, key: object) -> bool:
        return key in self._collections

    def watch(self, fn: Callable[[str], None]) -> None:
        if self._watcher is not None:
            raise RuntimeError("multiple calls to watch() are not supported")
        self._watcher = fn

    def collection(self, key: str) -> Collection | None:
        return self._collections.get(key)

    def create_or_update(self, namespace: str, name: str, spec: MetricSpec) -> BaseException | None:
        """Creates or updates the collection for a Metric; returns the scraper factory's error, or
        else the collection's last scrape error, if any."""
        key = f"{namespace}/{name}"
        try:
            scraper = (
                self._scraper_factory(key, spec)
                if self._scraper_factory is not None and spec.scrape_target
                else None
            )
        except Exception as exc:
            # Go's CreateOrUpdate returns the factory's error and leaves the collection (or its
            # absence) as it was; the Metric reconciler reports it in the Metric's status.
            return exc
        existing = self._collections.get(key)
        if existing is not None:
            existing.update(spec, scraper, self._clock())
            return existing.last_error
        coll = Collection(spec, scraper)
        self._collections[key] = coll
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # pure use (tests, benchmarks): the caller drives scrape_once()
        if loop is not None:
            coll.task = loop.create_task(self._scrape_loop(key, coll), name=f"scrape {key}")
        return None

    def delete(self, namespace: str, name: str) -> None:
        coll = self._collections.pop(f"{namespace}/{name}", None)
        if coll is not None and coll.task is not None:
            coll.task.cancel()

    async def close(self) -> None:
        tasks = [c.task for c in self._collections.values() if c.task is not None]
        self._collections.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- recording -----------------------------------------------------------------

    def record(self, key: str, now: float, stat: Stat, source: str = "") -> bool:
        """Records a stat at `now` (seconds). Stats for keys without a collection are dropped."""
        coll = self._collections.get(key)
        if coll is None:
            return False
        if not finite(stat):
            self.dropped.drop(source or stat.pod_name or key, "non-finite value", key)
            return False
        coll.record(now, stat)
        return True

    def record_wire_stat(self, key: str, stat: Stat, source: str = "") -> bool:
        """An activator's stat from the websocket (§4.9): recorded at its `timestamp` (seconds).

        A zero timestamp is stamped with the current second, as the stat server does in Go.
        """
        now = self._clock()
        if stat.timestamp == 0:
            stat.timestamp = math.floor(now)
        elif stat.timestamp > now + MAX_FUTURE_SKEW:
            self.dropped.drop(
                source or stat.pod_name or key,
                "timestamp in the future",
                f"{stat.timestamp} (Stat.timestamp is in seconds, not milliseconds)",
            )
            return False
        return self.record(key, float(stat.timestamp), stat, source)

    # ---- reading (scaling.MetricClient) ---------------------------------------------

    def _windows(self, key: str, now: float, rps: bool) -> tuple[float, float]:
        coll = self._collections.get(key)
        if coll is None:
            raise NotCollectingError(key)
        stable, panic = (coll.rps, coll.rps_panic) if rps else (coll.concurrency, coll.concurrency_panic)
        # With a scrape target, no data for a whole stable window means "no data" (§4.7 step 2);
        # without one (TBC = -1) silence means zero load.
        if coll.spec.scrape_target and stable.is_empty(now):
            raise NoDataError(key)
        return stable.window_average(now), panic.window_average(now)

    def stable_and_panic_concurrency(self, key: str, now: float) -> tuple[float, float]:
        return self._windows(key, now, rps=False)

    def stable_and_panic_rps(self, key: str, now: float) -> tuple[float, float]:
        return self._windows(key, now, rps=True)

    # ---- scraping ------------------------------------------------------------------

    async def scrape_once(self, key: str) -> None:
        """One scrape tick of one collection: record the stat, track the last error."""
        coll = self._collections.get(key)
        if coll is None:
            return
        scraper = coll.scraper
        error: BaseException | None = None
        stat: Stat | None = None
        if scraper is not None:
            started = time.monotonic()
            try:
                stat = await scraper.scrape(coll.spec.stable_window)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                logger.error("failed to scrape metrics: %s", exc, extra={"fields": {"knative.dev/key": key}})
            if self.scrape_observer is not None:  # kn.autoscaler.scrape.duration (§4.7)
                self.scrape_observer(key, time.monotonic() - started)
        if not _same_error(error, coll.last_error):
            coll.last_error = error
            if self._watcher is not None:
                self._watcher(key)
        if stat is not None and self._collections.get(key) is coll:
            self.record(key, self._clock(), stat, source=f"scrape of {key}")

    async def _scrape_loop(self, key: str, coll: Collection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while self._collections.get(key) is coll:
            deadline += self.scrape_interval
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -self.scrape_interval:
                # A slow scrape (up to the 3 s timeout) skips ticks rather than bursting, like a Go ticker.
                deadline = loop.time()
            try:
                await self.scrape_once(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scrape tick failed", extra={"fields": {"knative.dev/key": key}})
