"""Drain state (CONTRACT.md §2.11, knative.dev/pkg `handlers.Drainer`).

Once draining, probes fail with 503 while real requests are still served; the
drain completes when `quiet_period` passes with no new non-probe request. Every
caller of `drain()` waits for the same completion; `reset()` (the preStop call
that was not followed by SIGTERM) interrupts it and resumes normal serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Drainer"]


class Drainer:
    __slots__ = ("_clock", "_done", "_task", "draining", "last_request", "quiet_period")

    def __init__(self, quiet_period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_period = quiet_period
        self.draining = False
        self.last_request = 0.0
        self._clock = clock
        self._done: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        """A real request arrived: the quiet period starts over (only matters while draining)."""
        if self.draining:
            self.last_request = self._clock()

    def remaining(self) -> float:
        return max(0.0, self.last_request + self.quiet_period - self._clock())

    async def drain(self) -> None:
        if not self.draining or self._done is None:
            loop = asyncio.get_running_loop()
            self.draining = True
            self.last_request = self._clock()
            self._done = loop.create_future()
            self._task = loop.create_task(self._wait_quiet(self._done))
        await asyncio.shield(self._done)

    async def _wait_quiet(self, done: asyncio.Future[None]) -> None:
        while not done.done():
            left = self.remaining()
            if left <= 0:
                break
            await asyncio.sleep(left)
        if not done.done():
            done.set_result(None)

    def reset(self) -> None:
        """Stops draining and releases everyone waiting in `drain()`."""
        self.draining = False
        done, self._done = self._done, None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if done is not None and not done.done():
            done.set_result(None)
