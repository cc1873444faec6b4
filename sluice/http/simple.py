"""Small GETs over the engine's pooled keep-alive connections.

For the low-rate but high-fan-out callers: the autoscaler scrapes every pod every
second (10,000 pods is 10,000 GET/s), the activator and autoscaler probe pods.
aiohttp's client costs several times more CPU per request than the raw engine, so
these go through `UpstreamPool` / `UpstreamConnection` like proxied requests do,
with a sink that collects the (small, bounded) body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .client import DialPolicy, UpstreamConnection, UpstreamPool
from .headers import ResponseHead

__all__ = ["ResponseTooLarge", "SimpleClient", "SimpleResponse"]


class ResponseTooLarge(ValueError):
    """The body was longer than the caller's limit (the connection was dropped)."""


@dataclass(frozen=True, slots=True)
class SimpleResponse:
    status: int
    head: ResponseHead
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return self.head.header(name)


class _Collect:
    """A ResponseSink that buffers one small response into a future."""

    __slots__ = ("body", "done", "head", "max_body", "status")

    def __init__(self, done: asyncio.Future[None], max_body: int) -> None:
        self.done = done
        self.max_body = max_body
        self.status = 0
        self.head: ResponseHead | None = None
        self.body = bytearray()

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def on_interim(self, status: int, head: ResponseHead) -> None:
        return None

    def on_response_head(self, status: int, reason: bytes, head: ResponseHead) -> None:
        self.status = status
        self.head = head

    def on_response_body(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > self.max_body:
            self._fail(ResponseTooLarge(f"response body over {self.max_body} bytes"))

    def on_response_end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_upstream_error(self, exc: BaseException) -> None:
        self._fail(exc)

    def on_upgrade(self, status: int, reason: bytes, head: ResponseHead, leftover: bytes) -> None:
        self._fail(ConnectionError("unexpected protocol upgrade"))

    def on_read_done(self) -> None:
        return None

    def on_response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        return None

    def pause_request_body(self) -> None:
        return None

    def resume_request_body(self) -> None:
        return None


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

    def _pool(self, host: str, port: int) -> UpstreamPool:
        pool = self.pools.get((host, port))
        if pool is None:
            pool = self.pools[(host, port)] = UpstreamPool(host, port, self.max_idle, dial=self._dial)
        return pool

    async def get(
        self,
        host: str,
        port: int,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        max_body: int = 1 << 20,
    ) -> SimpleResponse:
        limit = self.timeout if timeout is None else timeout
        async with asyncio.timeout(limit):
            return await self._get(host, port, path, headers, max_body)

    async def _get(
        self, host: str, port: int, path: str, headers: Sequence[tuple[str, str]], max_body: int
    ) -> SimpleResponse:
        pool = self._pool(host, port)
        conn = pool.acquire_nowait() or await pool.connect()
        lines = [f"GET {path} HTTP/1.1\r\n"]
        if not any(name.lower() == "host" for name, _ in headers):
            lines.append(f"Host: {host}:{port}\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sink = _Collect(done, max_body)
        conn.begin(sink, "".join(lines).encode("latin-1"), head_request=False, has_body=False)
        try:
            await done
        except BaseException:
            _drop(conn, sink)
            raise
        assert sink.head is not None
        return SimpleResponse(sink.status, sink.head, bytes(sink.body))

    async def close(self) -> None:
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            pool.close()


def _drop(conn: UpstreamConnection, sink: _Collect) -> None:
    # A request that failed or timed out leaves the connection mid-response: unusable.
    if conn.sink is sink:
        conn.close()
