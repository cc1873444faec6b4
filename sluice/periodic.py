"""Periodic work that survives event-loop stalls and exceptions: the one helper every component uses.

Why not hand-chained `loop.call_at(handle.when() + period, ...)`: after a stall (SIGSTOP, a GC pause, a
CPU-throttled pod) that time is in the past, and uvloop then returns a plain `Handle` without `when()`,
so the next tick raised `AttributeError` and nothing rescheduled it: the queue-proxy's Stat froze for
the life of the process and the activator stopped reporting (issue 13). Here the ticker keeps its own
deadline and never asks a handle for it.

Semantics follow Go's `time.Ticker`, which Knative's tickers are (CONTRACT.md §2.9, §3.8): a fixed
cadence from the start; ticks missed during a stall are dropped, not replayed in a burst, and the
cadence resumes from the loop's current time. A callback that raises is logged (once per run of
failures, with the traceback) and the ticker keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Ticker", "next_deadline", "run_every"]

_log = logging.getLogger("sluice.periodic")


def next_deadline(deadline: float, period: float, now: float) -> tuple[float, int]:
    """The next tick after one due at `deadline`, and how many ticks a stall made us miss.

    Normally `deadline + period`; when that is already past, the cadence restarts from `now`
    (Go's ticker drops missed ticks instead of bursting)."""
    nxt = deadline + period
    if nxt > now:
        return nxt, 0
    missed = int((now - deadline) // period)
    return now + period, missed


class _Reporter:
    """Logs a stall or a failing callback once, not once per tick; says when it recovered."""

    __slots__ = ("behind", "failing", "logger", "name")

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.logger = logger
        self.failing = False
        self.behind = False

    def on_time(self, missed: int, period: float) -> None:
        if not missed:
            self.behind = False
            return
        # Warn once per episode: a run that is always slower than its period would otherwise log every tick.
        level = logging.DEBUG if self.behind else logging.WARNING
        self.behind = True
        self.logger.log(
            level,
            "%s: %.1fs behind (a stalled event loop or a slow run); %d tick(s) dropped, cadence resumed",
            self.name,
            missed * period,
            missed,
            extra={"fields": {"ticker": self.name, "missedTicks": missed}},
        )

    def failed(self) -> None:
        if not self.failing:
            self.failing = True
            self.logger.exception("%s: periodic callback failed (logged once until it recovers)", self.name)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.logger.info("%s: periodic callback recovered", self.name)


class Ticker:
    """Calls `fn()` every `period` seconds on the running loop until `stop()`.

    One timer handle at a time, no task: cheap enough for the queue-proxy's 1 s Stat tick.
    The next tick is scheduled before `fn` runs, so neither an exception nor a stall can end it.
    """

    __slots__ = ("_deadline", "_fn", "_handle", "_loop", "_reporter", "period")

    def __init__(
        self, period: float, fn: Callable[[], object], *, name: str, logger: logging.Logger | None = None
    ) -> None:
        if period <= 0:
            raise ValueError(f"ticker {name}: period must be > 0, got {period}")
        self.period = period
        self._fn = fn
        self._reporter = _Reporter(name, logger or _log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None
        self._deadline = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """First tick one period from now (Go: `time.NewTicker`)."""
        if self._handle is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._deadline = self._loop.time() + self.period
        self._handle = self._loop.call_at(self._deadline, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        self._deadline, missed = next_deadline(self._deadline, self.period, loop.time())
        self._handle = loop.call_at(self._deadline, self._tick)
        self._reporter.on_time(missed, self.period)
        try:
            self._fn()
        except Exception:
            self._reporter.failed()
        else:
            self._reporter.succeeded()


async def run_every(
    period: float,
    fn: Callable[[], Awaitable[object]],
    *,
    name: str,
    logger: logging.Logger | None = None,
    immediately: bool = False,
) -> None:
    """Awaits `fn()` every `period` seconds until cancelled: the async counterpart of `Ticker`.

    A run that takes longer than a period, or a stall, drops the missed ticks; an exception is
    logged once and the loop goes on. `immediately` runs the first call now instead of after a period.
    """
    if period <= 0:
        raise ValueError(f"periodic task {name}: period must be > 0, got {period}")
    reporter = _Reporter(name, logger or _log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() if immediately else loop.time() + period
    while True:
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            reporter.failed()
        else:
            reporter.succeeded()
        deadline, missed = next_deadline(deadline, period, loop.time())
        reporter.on_time(missed, period)
