"""Process and interpreter metrics: what Knative's components export as Go runtime metrics
(CONTRACT.md §2.10 "Go runtime metrics", otel-go's instrumentation/runtime), for a Python process.

OpenTelemetry's semantic conventions for processes and CPython: `process.cpu.time` (s, by
`cpu.mode`), `process.memory.usage` (resident) and `process.memory.virtual` (By),
`process.thread.count`, `process.open_file_descriptor.count`, `cpython.gc.collections` and
`cpython.gc.collected_objects` (by `cpython.gc.generation`), `cpython.gc.uncollectable_objects`.
All are observable: read from /proc, `resource` and `gc` at collection time, nothing per request.
The standard library is enough (no psutil): these are the few numbers a dashboard needs.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["register_runtime_metrics"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm() -> tuple[int, int]:
    """(virtual, resident) bytes of this process, from /proc (zeros where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            size, rss = f.read().split()[:2]
        return int(size) * _PAGE, int(rss) * _PAGE
    except OSError:
        return 0, 0


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


# (name, key of gc.get_stats(), unit, description): one series per generation each.
_GC_COUNTERS = (
    ("cpython.gc.collections", "collections", "{collection}",
     "The number of times a generation was collected since interpreter start."),
    ("cpython.gc.collected_objects", "collected", "{object}",
     "The total number of objects collected inside a generation since interpreter start."),
    ("cpython.gc.uncollectable_objects", "uncollectable", "{object}",
     "The total number of objects which were found to be uncollectable inside a generation."),
)  # fmt: skip


def register_runtime_metrics(meter: Meter) -> None:
    from opentelemetry.metrics import Observation

    def cpu(options: CallbackOptions) -> Iterable[Observation]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return [Observation(usage.ru_utime, {"cpu.mode": "user"}), Observation(usage.ru_stime, {"cpu.mode": "system"})]

    def memory(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(_statm()[1])]

    def virtual(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(_statm()[0])]

    def gc_stat(key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(stats[key], {"cpython.gc.generation": generation})
                for generation, stats in enumerate(gc.get_stats())
            ]

        return observe

    meter.create_observable_counter(
        "process.cpu.time",
        callbacks=[cpu],
        unit="s",
        description="Total CPU seconds broken down by different CPU modes.",
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage", callbacks=[memory], unit="By", description="The amount of physical memory in use."
    )
    meter.create_observable_up_down_counter(
        "process.memory.virtual", callbacks=[virtual], unit="By", description="The amount of committed virtual memory."
    )
    meter.create_observable_up_down_counter(
        "process.thread.count",
        callbacks=[lambda options: [Observation(threading.active_count())]],
        unit="{thread}",
        description="Process threads count.",
    )
    meter.create_observable_up_down_counter(
        "process.open_file_descriptor.count",
        callbacks=[lambda options: [Observation(_open_fds())]],
        unit="{file_descriptor}",
        description="Number of file descriptors in use by the process.",
    )
    for name, key, unit, description in _GC_COUNTERS:
        meter.create_observable_counter(name, callbacks=[gc_stat(key)], unit=unit, description=description)
