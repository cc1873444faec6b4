"""The breaker of CONTRACT.md §2.7, without an event loop."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from functools import partial

import pytest

from sluice.breaker import Breaker


def test_cc_slots_then_queue_of_ten_cc_then_refusal() -> None:
    b = Breaker(queue_depth=20, max_concurrency=2, initial_capacity=2)
    tickets = [b.reserve() for _ in range(22)]
    assert all(t is not None for t in tickets)
    assert [t.granted for t in tickets if t] == [True, True] + [False] * 20
    assert b.admitted == 22
    assert b.reserve() is None  # 11 × cc admitted: refused at once


def test_release_grants_waiters_in_fifo_order() -> None:
    order: list[int] = []
    b = Breaker(queue_depth=10, max_concurrency=1, initial_capacity=1)
    first = b.reserve()
    assert first is not None and first.granted
    def waiter(i: int) -> Callable[[], None]:
        return lambda: order.append(i)

    waiters = [b.reserve(waiter(i)) for i in range(3)]
    b.release(first)
    assert order == [0]
    assert waiters[0] is not None and waiters[0].granted
    b.release(waiters[0])
    assert order == [0, 1]


def test_cancelled_waiter_leaves_the_queue_and_frees_its_place() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    running = b.reserve()
    waiting = b.reserve()
    assert running and waiting and not waiting.granted
    assert b.reserve() is None
    b.release(waiting)  # client gone / timeout while queued
    assert b.admitted == 1
    assert b.reserve() is not None


def test_unpaired_release_is_a_programming_error() -> None:
    # Go's semaphore panics "release and acquire are not paired"; a second release of the same
    # ticket would otherwise free a slot some other request holds.
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    t = b.reserve()
    assert t is not None
    b.release(t)
    with pytest.raises(RuntimeError, match="not paired"):
        b.release(t)
    assert b.in_flight == 0
    running = b.reserve()
    queued = b.reserve()
    assert running is not None and queued is not None and not queued.granted
    b.release(queued)
    with pytest.raises(RuntimeError, match="not paired"):
        b.release(queued)  # a waiting ticket too
    assert b.admitted == 1


def test_capacity_update_grants_queued_requests() -> None:
    granted: list[int] = []
    b = Breaker(queue_depth=5, max_concurrency=2, initial_capacity=0)
    for i in range(3):
        assert b.reserve(partial(granted.append, i)) is not None
    b.update_capacity(2)
    assert granted == [0, 1]
    assert b.in_flight == 2


@pytest.mark.parametrize(
    ("queue_depth", "max_concurrency", "initial_capacity"),
    [(0, 1, 1), (-1, 1, 1), (1, -1, 0), (1, 1, -1), (1, 5, 6)],
)
def test_invalid_sizes_rejected(queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
    with pytest.raises(ValueError):
        Breaker(queue_depth, max_concurrency, initial_capacity)


def test_admission_is_fixed_when_capacity_changes() -> None:
    # The activator's revision breaker moves its capacity with the pods (§3.5): admitted requests
    # (waiting + executing) stay bounded by queue depth + max concurrency, not by the capacity.
    b = Breaker(queue_depth=2, max_concurrency=3, initial_capacity=0)
    tickets = [b.reserve() for _ in range(5)]
    assert all(t is not None and not t.granted for t in tickets)
    assert b.reserve() is None
    b.update_capacity(3)
    assert [t.granted for t in tickets if t] == [True, True, True, False, False]
    assert b.reserve() is None  # still 5 admitted
    b.update_capacity(1)  # shrinking never evicts running requests
    assert b.in_flight == 3 and b.admitted == 5
    with pytest.raises(ValueError):
        b.update_capacity(4)  # above max concurrency: Go's callers clamp first


def test_mass_cancellation_is_linear_and_keeps_counts_right() -> None:
    b = Breaker(queue_depth=100_000, max_concurrency=1, initial_capacity=1)
    running = b.reserve()
    waiters = [b.reserve() for _ in range(100_000)]
    assert b.admitted == 100_001
    for t in waiters[:-1]:  # all but the last time out while queued
        assert t is not None
        b.release(t)
    assert b.admitted == 2
    assert running is not None
    b.release(running)
    last = waiters[-1]
    assert last is not None and last.granted  # skipped every cancelled one
    assert b.admitted == 1 and b.in_flight == 1


class _Holder:
    """A request object that keeps its ticket, whose callback is its own bound method (as the
    queue-proxy's and the activator's requests do)."""

    def __init__(self, b: Breaker) -> None:
        self.ticket = b.reserve(self.granted)

    def granted(self) -> None:
        pass


@pytest.mark.parametrize("queued", [False, True])
def test_a_released_ticket_leaves_no_reference_cycle(queued: bool) -> None:
    """Measured under load: the request -> ticket -> bound method -> request cycle left ~6
    objects per queued request to the cyclic GC, and full collections every second."""
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    first = _Holder(b)
    holder = _Holder(b) if queued else first
    if queued:
        assert first.ticket is not None
        b.release(first.ticket)  # grants the queued one
    assert holder.ticket is not None and holder.ticket.granted
    b.release(holder.ticket)
    ref = weakref.ref(holder)
    gc.disable()
    try:
        del holder, first
        assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()
