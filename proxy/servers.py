"""The queue-proxy's side listeners (CONTRACT.md §2.3): admin :8022 with only
`/wait-for-drain`, and the autoscaler's stats endpoint :9090 with only `/metrics`.
Both run on the same engine as the serving port (no aiohttp in the sidecar)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sluice.http.server import HttpExchange

__all__ = ["AdminHandler", "StatsHandler", "path_of"]

log = logging.getLogger("queueproxy")


def path_of(ex: HttpExchange) -> bytes:
    url = ex.url
    cut = url.find(b"?")
    return url if cut < 0 else url[:cut]


def not_found(ex: HttpExchange) -> None:
    ex.respond_error(404, "404 page not found")


class AdminHandler:
    """`/wait-for-drain` (any method): blocks until the drain completes, then 200."""

    def __init__(self, wait_for_drain: Callable[[], Awaitable[None]]) -> None:
        self.wait_for_drain = wait_for_drain
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, ex: HttpExchange) -> None:
        if path_of(ex) != b"/wait-for-drain":
            not_found(ex)
            return
        task = asyncio.get_running_loop().create_task(self._drain(ex))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self, ex: HttpExchange) -> None:
        await self.wait_for_drain()
        if not ex.aborted:
            ex.respond_text(200, b"")


class StatsHandler:
    """`/metrics` → the protobuf Stat of the last completed window (§2.9): the same
    bytes to every scraper until the next tick; `Accept` is ignored."""

    def __init__(self) -> None:
        self.body = b""

    def __call__(self, ex: HttpExchange) -> None:
        if path_of(ex) != b"/metrics":
            not_found(ex)
            return
        ex.respond_text(200, self.body, content_type=b"application/protobuf")
