"""Small GETs over the engine's pooled keep-alive connections.

For the low-rate but high-fan-out callers: the autoscaler scrapes pods every second
(10,000 pods is 7,000 GET/s with §4.8's sampling). aiohttp's client costs several times more CPU
per request than the raw engine, so these go through `UpstreamPool` /
`UpstreamConnection` like proxied requests do, with a sink that collects the (small,
bounded) body.

Two ways in. `SimpleClient.get()` awaits one response. `SimpleClient.start()` issues a
`PendingGet` and reports back by calling its `finished()`: no task, no future and no
timer per request, so a caller fanning out thousands of GETs a second (the scraper,
bench/autoscaler_bench.py) pays for the request and the parse only. Deadlines of all
GETs of a client share one `DeadlineScanner` tick (late by at most its 50 ms
resolution) instead of an `asyncio.timeout` each.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .client import DialPolicy, UpstreamConnection, UpstreamPool, WholeResponseAsParts
from .deadlines import DeadlineScanner
from .headers import ResponseHead

__all__ = ["PendingGet", "ResponseTooLarge", "SimpleClient", "SimpleResponse", "get_head"]


class ResponseTooLarge(ValueError):
    """The body was longer than the caller's limit (the connection was dropped)."""


@dataclass(frozen=True, slots=True)
class SimpleResponse:
    status: int
    head: ResponseHead
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return self.head.header(name)


def get_head(host: str, port: int, path: str, headers: Sequence[tuple[str, str]] = (), close: bool = False) -> bytes:
    """The request head of a body-less GET; a `Host` among `headers` replaces the default."""
    lines = [f"GET {path} HTTP/1.1\r\n"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {host}:{port}\r\n")
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class PendingGet(WholeResponseAsParts):
    """One GET in flight: the ResponseSink of its connection and an item of the client's
    deadline scan. Subclasses implement `finished()`, called exactly once unless `abort()`
    came first; `status`, `head` and `body` are the response when it reports no error."""

    __slots__ = ("body", "conn", "deadline", "done", "head", "max_body", "scanner", "status")

    def __init__(self, max_body: int = 1 << 20) -> None:
        self.max_body = max_body
        self.status = 0
        self.head: ResponseHead | None = None
        self.body = b""
        self.conn: UpstreamConnection | None = None
        self.scanner: DeadlineScanner | None = None
        self.deadline = 0.0
        self.done = False

    def finished(self, error: BaseException | None) -> None:
        """The response is complete (`error` is None) or the GET failed."""
        raise NotImplementedError

    def abort(self) -> None:
        """The caller lost interest (cancelled, or its round is over): no `finished()` call."""
        self._end()

    def _end(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self.scanner is not None:
            self.scanner.discard(self)
        conn = self.conn
        if conn is not None and conn.sink is self:
            # Still mid-response (failed, timed out or aborted): the connection is unusable.
            conn.close()
        return True

    def fail(self, exc: BaseException) -> None:
        if self._end():
            self.finished(exc)

    # ---- HasDeadline --------------------------------------------------------

    def on_tick(self, now: float) -> None:
        if now >= self.deadline:
            self.fail(TimeoutError("GET timed out"))

    # ---- ResponseSink -------------------------------------------------------

    def on_interim(self, status: int, head: ResponseHead) -> None:
        return None

    def on_response_head(self, status: int, reason: bytes, head: ResponseHead) -> None:
        self.status = status
        self.head = head

    def on_response_body(self, data: bytes) -> None:
        # Bodies here are small (a Stat is at most 336 bytes): usually one chunk, kept as is.
        body = self.body = self.body + data if self.body else data
        if len(body) > self.max_body:
            self.fail(ResponseTooLarge(f"response body over {self.max_body} bytes"))

    def on_response_end(self) -> None:
        if self._end():
            self.finished(None)

    def on_upstream_error(self, exc: BaseException) -> None:
        self.fail(exc)

    def on_upgrade(self, status: int, reason: bytes, head: ResponseHead, leftover: bytes) -> None:
        if self.conn is not None:
            self.conn.close()  # handed over as a tunnel nobody will drive
        self.fail(ConnectionError("unexpected protocol upgrade"))

    def on_read_done(self) -> None:
        return None

    def on_response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        return None

    def pause_request_body(self) -> None:
        return None

    def resume_request_body(self) -> None:
        return None


class _Awaited(PendingGet):
    """The PendingGet behind `SimpleClient.get()`: resolves a future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None], max_body: int) -> None:
        super().__init__(max_body)
        self.future = future

    def finished(self, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


def _dial_ended(pool: UpstreamPool) -> None:
    # Pairs with `pool.dialing += 1` in SimpleClient.start (a done callback, so a task
    # cancelled before it ever ran is counted off too).
    pool.dialing -= 1


# Pools kept before the first sweep for empty ones (see SimpleClient._sweep).
_MIN_SWEEP = 256


class SimpleClient:
    """GET with a total timeout; one small keep-alive pool per host:port.

    `keep_alive=False` opens a connection per request (scraping through a Service, so
    that each scrape may land on another pod, as Knative's scraper does)."""

    def __init__(self, timeout: float = 3.0, keep_alive: bool = True, max_idle_per_host: int = 2) -> None:
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.max_idle = max_idle_per_host if keep_alive else 0
        # One dial attempt bounded by the request's own timeout: a scrape or probe that
        # cannot connect fails now and is retried by its caller's own cadence.
        self._dial = DialPolicy(base=timeout, factor=1.0, steps=1, sleep=0.0)
        self.pools: dict[tuple[str, int], UpstreamPool] = {}
        self._sweep_at = _MIN_SWEEP
        self._empty: set[tuple[str, int]] = set()  # pools found empty by the last sweep
        self.deadlines = DeadlineScanner(time.monotonic)
        self._dialling: set[asyncio.Task[None]] = set()

    def pool(self, host: str, port: int) -> UpstreamPool:
        pool = self.pools.get((host, port))
        if pool is None:
            if len(self.pools) >= self._sweep_at:
                self._sweep()
            pool = self.pools[(host, port)] = UpstreamPool(host, port, self.max_idle, dial=self._dial)
        return pool

    def _sweep(self) -> None:
        """Forgets pools with no connection left. Pods come and go (a new IP each), and
        their pools would otherwise pile up for the life of the process. Run when the
        table has doubled since the last sweep: amortised O(1) per new pool.

        A pool goes only when a second sweep finds it still empty: one created just now
        has its dial task scheduled but not started, and dropping it would orphan that
        connection while the pod's next GET dialled another."""
        kept: dict[tuple[str, int], UpstreamPool] = {}
        empty = set()
        for key, pool in self.pools.items():
            if pool.open_connections > 0 or pool.idle or pool.dialing:
                kept[key] = pool
            elif key not in self._empty:
                kept[key] = pool
                empty.add(key)
        self.pools = kept
        self._empty = empty
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self.pools))

    def head(self, host: str, port: int, path: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
        """The GET head this client sends (`Connection: close` when it does not keep connections)."""
        return get_head(host, port, path, headers, close=not self.keep_alive)

    def start(self, get: PendingGet, pool: UpstreamPool, head: bytes, timeout: float | None = None) -> None:
        """Sends `head` on an idle connection of `pool` (or a new one); `get.finished()` follows."""
        get.scanner = scanner = self.deadlines
        get.deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        scanner.add(get)
        conn = pool.acquire_nowait()
        if conn is None:
            # Only the first GET to a pod (or the one after a failure) dials: a task is fine here.
            # The pool counts as dialling from now, not from when the task first runs: a burst
            # of new pods runs several sweeps before any task starts, and a pool dropped
            # meanwhile orphaned its connection and made the pod's next GET dial again
            # (~3,000 extra dials and leaked sockets at 10,000 pods, issue 19).
            pool.dialing += 1
            task = asyncio.get_running_loop().create_task(self._dial_and_start(get, pool, head))
            self._dialling.add(task)
            task.add_done_callback(self._dialling.discard)
            task.add_done_callback(lambda _task: _dial_ended(pool))
            return
        get.conn = conn
        conn.begin(get, head, head_request=False, has_body=False)

    async def _dial_and_start(self, get: PendingGet, pool: UpstreamPool, head: bytes) -> None:
        try:
            conn = await pool.connect()
        except Exception as exc:
            get.fail(exc)
            return
        if get.done:
            # Timed out or aborted while dialling; the new connection is still good.
            pool.release(conn)
            return
        get.conn = conn
        conn.begin(get, head, head_request=False, has_body=False)

    async def get(
        self,
        host: str,
        port: int,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        max_body: int = 1 << 20,
    ) -> SimpleResponse:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        get = _Awaited(done, max_body)
        self.start(get, self.pool(host, port), self.head(host, port, path, headers), timeout)
        try:
            await done
        except BaseException:
            get.abort()
            raise
        assert get.head is not None
        return SimpleResponse(get.status, get.head, get.body)

    async def close(self) -> None:
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            pool.close()
        # GETs still in flight fail now rather than wait for a tick that will not come.
        for get in list(self.deadlines.active):
            get.on_tick(math.inf)
        self.deadlines.close()
        dialling, self._dialling = self._dialling, set()
        for task in dialling:
            task.cancel()
        # A cancelled dial has nothing to report.
        await asyncio.gather(*dialling, return_exceptions=True)
