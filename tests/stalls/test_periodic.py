"""`sluice.periodic`: periodic work survives event-loop stalls and raising callbacks (issue 13).

The stalls here are real: a callback blocks the loop with `time.sleep`, as a GC pause or a
CPU-throttled pod would. uvloop is used because the bug it guards against was uvloop's
(a plain `Handle` without `when()` for a time already past)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from sluice.periodic import Ticker, next_deadline, run_every


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(main())


def test_next_deadline_keeps_the_cadence_and_drops_missed_ticks() -> None:
    assert next_deadline(10.0, 1.0, 10.2) == (11.0, 0)
    # A 3.5 s stall: three ticks dropped, the cadence restarts from now (Go's ticker drops them too).
    assert next_deadline(10.0, 1.0, 13.5) == (14.5, 3)
    assert next_deadline(10.0, 1.0, 11.0) == (12.0, 1)


def test_ticker_survives_a_stall_longer_than_its_period(caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ticker = Ticker(0.05, lambda: ticks.append(loop.time()), name="test")
        ticker.start()
        await asyncio.sleep(0.12)
        time.sleep(0.4)  # the stall: the next deadline is now in the past
        before = len(ticks)
        await asyncio.sleep(0.3)
        ticker.stop()
        after = len(ticks)
        # Ticking again at its cadence, with no burst of the ~8 missed ticks.
        assert 4 <= after - before <= 8, ticks
        gaps = [b - a for a, b in zip(ticks[before:], ticks[before + 1 :], strict=False)]
        assert all(g > 0.03 for g in gaps), gaps

    with caplog.at_level(logging.WARNING, logger="sluice.periodic"):
        run(main)
    stalls = [r for r in caplog.records if "tick(s) dropped" in r.getMessage()]
    assert len(stalls) == 1


def test_ticker_survives_a_raising_callback_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("boom")

    async def main() -> None:
        ticker = Ticker(0.02, flaky, name="flaky")
        ticker.start()
        await asyncio.sleep(0.2)
        ticker.stop()
        stopped_at = calls
        await asyncio.sleep(0.06)
        assert calls == stopped_at  # stop() really stops

    with caplog.at_level(logging.INFO, logger="sluice.periodic"):
        run(main)
    assert calls >= 6
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_run_every_survives_stalls_and_exceptions() -> None:
    seen: list[float] = []

    async def work() -> None:
        loop = asyncio.get_running_loop()
        seen.append(loop.time())
        if len(seen) == 2:
            time.sleep(0.3)  # a stall inside the work itself
        if len(seen) == 3:
            raise ValueError("one bad round")

    async def main() -> None:
        task = asyncio.create_task(run_every(0.05, work, name="work", immediately=True))
        await asyncio.sleep(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert len(seen) >= 6
    # After the stall the rounds are a period apart again, not a catch-up burst.
    gaps = [b - a for a, b in itertools.pairwise(seen[2:])]
    assert all(g > 0.03 for g in gaps), gaps


def test_rejects_a_non_positive_period() -> None:
    with pytest.raises(ValueError, match="period"):
        Ticker(0, lambda: None, name="zero")
