"""Instruments and bucket boundaries shared by the components (CONTRACT.md §2.10; Sluice's own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .histograms import HotHistogram, HotHistograms

__all__ = ["COLD_START_BOUNDS", "INVOCATION_DURATION_BOUNDS", "QUEUE_WAIT_BOUNDS", "queue_wait_histogram"]

# §2.10: explicit bucket boundaries of kn.serving.invocation.duration (and otelhttp's default).
INVOCATION_DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# sluice.queue.wait (Prometheus `sluice_queue_wait_seconds`): time in the QP's breaker queue (§2.7)
# or the activator's throttler (§3.5) — mostly sub-millisecond, up to the revision timeout when
# the queue backs up (or a pod is starting).
QUEUE_WAIT_BOUNDS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# sluice.activator.cold_start: a pod's start (image pull, app start, readiness) — seconds to minutes.
COLD_START_BOUNDS = (
    0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0,
)  # fmt: skip


def queue_wait_histogram(histograms: HotHistograms, where: str) -> HotHistogram:
    """`sluice.queue.wait` (s): the QP's breaker queue or the activator's throttler queue."""
    return histograms.histogram(
        "sluice.queue.wait", "s", f"Time requests spent waiting in the {where} for an execution slot", QUEUE_WAIT_BOUNDS
    )
