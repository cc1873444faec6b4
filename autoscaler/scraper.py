"""Scraping queue-proxies on :9090 (CONTRACT.md §4.8; Knative `metrics/stats_scraper.go`,
`http_scrape_client.go`, `sample_size.go`).

Every second, per revision with a scrape target: sample `n` of the `N` ready pods, GET
`http://<podIP>:9090/metrics` with `Accept: application/protobuf` (3 s timeout, keep-alive), sum
the four rate/concurrency fields and extrapolate `sum / n x N` into one `service-scraper` stat.
When every pod answers 502/503 only (a mesh in the way) the scraper falls back to scraping the
private service, and stays there. Pods come from a `PodAccessor` the reconciler implements over
its pod informer; this module never talks to Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from sluice.http.headers import ResponseHead
from sluice.http.simple import PendingGet, ResponseTooLarge, SimpleClient
from sluice.wire import MAX_SCRAPED_STAT_BYTES, DecodeError, Stat, decode_stat

from .collector import finite
from .dropped import DroppedPayloads

__all__ = [
    "HTTP_CLIENT_TIMEOUT",
    "METRICS_PORT",
    "SCRAPER_POD_NAME",
    "DirectScrapingNotAvailableError",
    "HTTPScrapeClient",
    "PodAccessor",
    "PodsExhaustedError",
    "ScrapeError",
    "ServiceScraper",
    "StaticPods",
    "population_mean_sample_size",
]

logger = logging.getLogger("autoscaler.scraper")

METRICS_PORT = 9090
HTTP_CLIENT_TIMEOUT = 3.0
SCRAPER_POD_NAME = "service-scraper"
PROTOBUF = "application/protobuf"
_PROTOBUF_BYTES = PROTOBUF.encode()
_ACCEPT = ("Accept", PROTOBUF)
SCRAPER_MAX_RETRIES = 10  # service mode: tries per worker to reach a pod not seen yet

# X = z^2 x sigma^2 / MOE^2 = 1.96^2 x 100 / 5^2, written out: Go folds the constant exactly and
# 1.96 * 1.96 in binary floating point is not 3.8416.
_X = 15.3664


def population_mean_sample_size(population: int) -> int:
    """n = N for N <= 3, else ceil(N·X / (N + X - 1)) (§4.8): 4->4, 10->7, 100->14, 1000->16."""
    if population < 0:
        return 0
    if population <= 3:
        return population
    return math.ceil(population * _X / (population + _X - 1))


class ScrapeError(Exception):
    """A failed scrape; `might_be_mesh` for 502/503 answers (a mesh proxy in the way)."""

    def __init__(self, message: str, might_be_mesh: bool = False) -> None:
        super().__init__(message)
        self.might_be_mesh = might_be_mesh


class PodsExhaustedError(ScrapeError):
    def __init__(self) -> None:
        super().__init__("pods exhausted")


class DirectScrapingNotAvailableError(ScrapeError):
    def __init__(self) -> None:
        super().__init__("all pod scrapes returned 503 error")


class PodAccessor(Protocol):
    """The revision's pods, from the reconciler's informer cache (§4.8 "candidate pods")."""

    def pod_ips_split_by_age(self, window: float, now: float) -> tuple[list[str], list[str]]:
        """IPs of Running, non-terminating, Ready pods: (started >= window ago, younger)."""
        ...

    def ready_count(self) -> int: ...


class StaticPods:
    """A fixed pod list `(ip, start_time)`; for tests, benchmarks and `sluice local`."""

    def __init__(self, pods: Sequence[tuple[str, float]] = ()) -> None:
        self.pods = list(pods)

    def pod_ips_split_by_age(self, window: float, now: float) -> tuple[list[str], list[str]]:
        old = [ip for ip, start in self.pods if now - start >= window]
        young = [ip for ip, start in self.pods if now - start < window]
        return old, young

    def ready_count(self) -> int:
        return len(self.pods)


def _finite(stat: Stat) -> bool:
    # process_uptime too: service scraping compares it with the stable window.
    return finite(stat) and math.isfinite(stat.process_uptime)


class HTTPScrapeClient:
    """GETs one Stat. Fails on transport error, non-2xx, wrong Content-Type or a bad body.

    Runs on the raw engine's pooled connections (sluice.http.simple), not aiohttp: at
    10,000 pods the scraper makes 7,000 GET/s, and aiohttp's client cost most of a core
    there (bench/autoscaler_bench.py). Pod scrapes go through `start_pod()`, callback
    driven; `scrape()` awaits one GET (service mode, tests)."""

    def __init__(self, session: SimpleClient, dropped: DroppedPayloads | None = None) -> None:
        self.session = session
        self.dropped = dropped if dropped is not None else DroppedPayloads()

    @classmethod
    def create_session(cls, keep_alive: bool = True, timeout: float = HTTP_CLIENT_TIMEOUT) -> SimpleClient:
        """Direct pod scraping keeps connections; mesh (service) scraping opens a new one each
        time so the service can pick another pod (stats_scraper.go)."""
        return SimpleClient(timeout=timeout, keep_alive=keep_alive)

    async def scrape(self, url: str, headers: dict[str, str] | None = None) -> Stat:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        h = {"Accept": PROTOBUF}
        if headers:
            h.update(headers)
        try:
            # Knative reads at most 336 bytes of a Stat (§1.1); a longer body is not a Stat.
            resp = await self.session.get(
                parts.hostname or "", parts.port or 80, path, list(h.items()), max_body=MAX_SCRAPED_STAT_BYTES
            )
        except Exception as exc:
            raise self.failure(url, exc) from exc
        return self.stat_of(url, resp.status, resp.head, resp.body)

    def start_pod(self, get: PodGet, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Issues `GET http://<ip>:<port>/metrics` for `get`; its `finished()` follows."""
        session = self.session
        ip, port = get.ip, get.port
        session.start(get, session.pool(ip, port), session.head(ip, port, "/metrics", (_ACCEPT, *headers)))

    def failure(self, url: str, exc: BaseException) -> ScrapeError:
        """The ScrapeError for a GET that got no complete response."""
        if isinstance(exc, ResponseTooLarge):
            self.dropped.drop(url, "oversized", f"more than {MAX_SCRAPED_STAT_BYTES} bytes")
            return ScrapeError(f"stat from {url!r} is larger than {MAX_SCRAPED_STAT_BYTES} bytes")
        # Transport errors, timeouts, unparsable responses (OSError, TimeoutError, HttpParserError).
        return ScrapeError(f"GET {url!r} failed: {exc!r}")

    def stat_of(self, url: str, status: int, head: ResponseHead | None, body: bytes) -> Stat:
        """The Stat in a complete response; ScrapeError for anything else (§4.8)."""
        if not 200 <= status < 300:
            raise ScrapeError(
                f"GET request for URL {url!r} returned HTTP status {status}",
                might_be_mesh=status in (502, 503),
            )
        if head is None or head.header(b"content-type") != _PROTOBUF_BYTES:
            raise ScrapeError("unsupported metric type")
        try:
            stat = decode_stat(body)
        except DecodeError as exc:
            self.dropped.drop(url, "corrupt", str(exc))
            raise ScrapeError(f"unmarshalling the stat from {url!r} failed: {exc}") from exc
        if not _finite(stat):
            self.dropped.drop(url, "non-finite value")
            raise ScrapeError(f"stat from {url!r} has a non-finite value")
        return stat


class PodGet(PendingGet):
    """One pod's GET in a direct scrape round; reports to its round."""

    __slots__ = ("ip", "port", "scrape_round")

    def __init__(self, scrape_round: _PodRound, ip: str, port: int) -> None:
        super().__init__(MAX_SCRAPED_STAT_BYTES)  # Knative reads at most 336 bytes of a Stat (§1.1)
        self.scrape_round = scrape_round
        self.ip = ip
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}/metrics"

    def finished(self, error: BaseException | None) -> None:
        self.scrape_round.pod_finished(self, error)


class _PodRound:
    """One revision's direct pod scrape (§4.8), driven by the GETs' callbacks.

    Go runs `n` goroutines of an errgroup, each taking the next candidate until one scrape
    succeeds, and cancels them all when one runs out of candidates. Here `n` GETs are in
    flight and a failed one is replaced by a GET to the next candidate: the same pods are
    asked in the same order, without a task, a future and a timer per pod (10,000 pods
    cost 0.8 of a core that way, bench/RESULTS.md). One future reports the round."""

    __slots__ = (
        "candidates",
        "client",
        "exhausted",
        "future",
        "gets",
        "headers",
        "key",
        "next_index",
        "port",
        "results",
        "sample",
        "saw_non_mesh",
        "total",
    )

    def __init__(
        self,
        client: HTTPScrapeClient,
        candidates: list[str],
        sample: int,
        total: int,
        port: int,
        headers: Sequence[tuple[str, str]],
        key: str,
    ) -> None:
        self.client = client
        self.candidates = candidates
        self.sample = sample
        self.total = total
        self.port = port
        self.headers = headers
        self.key = key
        self.future: asyncio.Future[Stat] = asyncio.get_running_loop().create_future()
        self.gets: list[PodGet] = []
        self.results: list[Stat] = []
        self.next_index = 0
        self.saw_non_mesh = False
        self.exhausted = False  # a worker ran out of candidates: the round fails

    def start(self) -> asyncio.Future[Stat]:
        for _ in range(self.sample):
            self._next()
        return self.future

    def _next(self) -> None:
        if self.next_index >= len(self.candidates):
            if not self.exhausted:
                # Go's errgroup cancels the other requests now, but a goroutine that already
                # has its response still counts it: answers read in this loop iteration are
                # looked at (and a bad one counted as dropped) before the round ends.
                self.exhausted = True
                asyncio.get_running_loop().call_soon(self._exhausted)
            return
        get = PodGet(self, self.candidates[self.next_index], self.port)
        self.next_index += 1
        self.gets.append(get)
        self.client.start_pod(get, self.headers)

    def pod_finished(self, get: PodGet, error: BaseException | None) -> None:
        if self.future.done():
            return
        client = self.client
        try:
            if error is not None:
                self._failed(get, client.failure(get.url, error))
                return
            try:
                stat = client.stat_of(get.url, get.status, get.head, get.body)
            except ScrapeError as exc:
                self._failed(get, exc)
                return
            results = self.results
            results.append(stat)
            if len(results) == self.sample:
                self.gets = []  # all answered; see abort()
                self.future.set_result(_extrapolate(results, self.sample, self.total))
        except Exception as exc:
            # A bug here runs inside a socket callback: fail the round rather than leave it
            # (and its revision's scrape loop) waiting forever.
            self.abort()
            if not self.future.done():
                self.future.set_exception(exc)

    def _failed(self, get: PodGet, exc: ScrapeError) -> None:
        if not exc.might_be_mesh:
            self.saw_non_mesh = True
        logger.info("failed scraping pod %s: %s", get.ip, exc, extra={"fields": {"knative.dev/key": self.key}})
        self._next()

    def _exhausted(self) -> None:
        if self.future.done():
            return  # cancelled meanwhile
        self.abort()
        if self.results:
            logger.warning("too many pods failed scraping for meaningful interpolation")
            self.future.set_exception(PodsExhaustedError())
        elif self.saw_non_mesh:
            logger.warning("0 pods scraped, but did not see a mesh-related error")
            self.future.set_exception(PodsExhaustedError())
        else:
            logger.warning("0 pods were successfully scraped out of %d", len(self.candidates))
            self.future.set_exception(DirectScrapingNotAvailableError())

    def abort(self) -> None:
        # Dropping the list also breaks the round <-> GET reference cycle, so a finished round
        # is freed at once instead of waiting for (and feeding) the garbage collector.
        gets, self.gets = self.gets, []
        for get in gets:
            get.abort()


def _extrapolate(stats: Sequence[Stat], sample: int, total: int) -> Stat:
    """Sum of the sampled pods, scaled to the whole revision: value = sum / n x N (§4.8)."""
    ret = Stat(pod_name=SCRAPER_POD_NAME)
    for s in stats:
        ret.average_concurrent_requests += s.average_concurrent_requests
        ret.average_proxied_concurrent_requests += s.average_proxied_concurrent_requests
        ret.request_count += s.request_count
        ret.proxied_request_count += s.proxied_request_count
    ret.average_concurrent_requests = ret.average_concurrent_requests / sample * total
    ret.average_proxied_concurrent_requests = ret.average_proxied_concurrent_requests / sample * total
    ret.request_count = ret.request_count / sample * total
    ret.proxied_request_count = ret.proxied_request_count / sample * total
    return ret


# One generator for every revision's pod shuffle (one event loop, no threads): a Random of its
# own per scraper held ~2.9 kB of Mersenne Twister state and cost a 0.2 ms seeding from urandom,
# 14.5 MB and 1 s of start-up at 5,000 revisions (issue 19).
_SHARED_RNG = random.Random()


class ServiceScraper:
    """Scrapes one revision (Knative's `serviceScraper`); implements `collector.StatsScraper`.

    `mesh_mode` is `config-network` `mesh-compatibility-mode`: "auto" (pods first, fall back to
    the service on mesh errors), "enabled" (service only), "disabled" (pods only).
    """

    def __init__(
        self,
        namespace: str,
        scrape_target: str,
        pods: PodAccessor,
        direct_client: HTTPScrapeClient,
        mesh_client: HTTPScrapeClient | None = None,
        *,
        clock: Callable[[], float],
        port: int = METRICS_PORT,
        mesh_mode: str = "auto",
        use_passthrough_lb: bool = False,
        service_url: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.namespace = namespace
        self.host = f"{scrape_target}.{namespace}"
        self.url = service_url if service_url is not None else f"http://{self.host}:{port}/metrics"
        self.pods = pods
        self.direct_client = direct_client
        self.mesh_client = mesh_client if mesh_client is not None else direct_client
        self.clock = clock
        self.port = port
        self.mesh_mode = mesh_mode
        self.use_passthrough_lb = use_passthrough_lb
        self.pods_addressable = mesh_mode != "enabled"
        self._rng = rng if rng is not None else _SHARED_RNG

    async def scrape(self, window: float) -> Stat | None:
        if self.pods_addressable or self.use_passthrough_lb:
            try:
                return await self._scrape_pods(window)
            except DirectScrapingNotAvailableError:
                if self.use_passthrough_lb or self.mesh_mode == "disabled":
                    raise
            # Only mesh-like failures (all 502/503): fall back to scraping the service.
        try:
            ready = self.pods.ready_count()
        except Exception as exc:
            raise ScrapeError("failed to get endpoints") from exc
        if ready == 0:
            return None
        stat = await self._scrape_service(window, ready)
        if self.pods_addressable:
            logger.info(
                "direct pod scraping off, service scraping on", extra={"fields": {"knative.dev/key": self.host}}
            )
            self.pods_addressable = False
        return stat

    async def _scrape_pods(self, window: float) -> Stat | None:
        old, young = self.pods.pod_ips_split_by_age(window, self.clock())
        total = len(old) + len(young)
        if total == 0:
            return None  # scaled to zero: no stat, no error
        sample = population_mean_sample_size(total)
        # Not enough old pods: all old ones are used, pick the rest among shuffled young ones.
        # Otherwise pick among shuffled old ones; young ones stay as backups.
        if len(old) < sample:
            young = young[:]
            self._rng.shuffle(young)
        else:
            old = old[:]
            self._rng.shuffle(old)
        candidates = old + young
        headers = (("Knative-Direct-Lb", "true"), ("Host", self.host)) if self.use_passthrough_lb else ()
        scrape_round = _PodRound(self.direct_client, candidates, sample, total, self.port, headers, self.host)
        future = scrape_round.start()
        try:
            return await future
        except asyncio.CancelledError:
            scrape_round.abort()  # no GET outlives its round
            raise

    async def _scrape_service(self, window: float, ready: int) -> Stat:
        sample = population_mean_sample_size(ready)
        old_stats: list[Stat] = []
        young_stats: list[Stat] = []
        seen: set[str] = set()

        async def worker() -> None:
            tries = 0
            while True:
                tries += 1
                try:
                    stat = await self.mesh_client.scrape(self.url)
                    if stat.pod_name in seen:
                        raise ScrapeError("did not receive stat from an unscraped pod")
                    seen.add(stat.pod_name)
                except ScrapeError:
                    if tries >= SCRAPER_MAX_RETRIES:
                        raise
                    continue
                if stat.process_uptime >= window:
                    old_stats.append(stat)
                    return
                if len(young_stats) >= sample:
                    return
                young_stats.append(stat)

        errors = await _run_workers_collect(worker, sample)
        if errors:
            unseen = all(str(e) == "did not receive stat from an unscraped pod" for e in errors)
            if not unseen or len(old_stats) + len(young_stats) < sample:
                raise ScrapeError(f"unsuccessful scrape, sampleSize={sample}: {errors[0]}")
        # Old pods are preferred; young ones only fill up to the sample size.
        picked = old_stats + young_stats[: max(0, sample - len(old_stats))]
        return _extrapolate(picked, sample, ready)


async def _run_workers_collect(worker: Callable[[], Awaitable[None]], count: int) -> list[BaseException]:
    tasks = [asyncio.ensure_future(worker()) for _ in range(count)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors: list[BaseException] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, ScrapeError):
                raise outcome
            errors.append(outcome)
    return errors
