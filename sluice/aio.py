"""Running a component's main coroutine on uvloop (the event loop every Sluice process uses:
its transports and timers are several times cheaper than asyncio's selector loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay runnable without it
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result
