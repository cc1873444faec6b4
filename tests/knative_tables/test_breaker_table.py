"""Knative's `pkg/queue/breaker_test.go` (at the commit CONTRACT.md pins), translated case by case.

Test names are Go's. Go runs each request in a goroutine blocked on a barrier; here a request is a
ticket (granted now, waiting, or refused) and "processing" one releases it, so the same sequences run
without threads. Go's separate semaphore type is folded into `Breaker` (its capacity and in-flight
count); `TestPackUnpack` tests Go's atomic bit packing, which has no counterpart.
"""

from __future__ import annotations

from collections import deque

import pytest

from sluice.breaker import Breaker, Ticket


class Requestor:
    """Go's `requestor`: `request()` is Maybe with a thunk blocked on the barrier."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.admitted: deque[Ticket] = deque()  # in arrival order, granted or waiting
        self.outcomes: deque[bool] = deque()  # finished requests: accepted or not

    def request(self) -> Ticket | None:
        ticket = self.breaker.reserve()
        if ticket is None:
            self.outcomes.append(False)  # ErrRequestQueueFull
        else:
            self.admitted.append(ticket)
        return ticket

    def request_then_cancel(self) -> None:
        """requestWithContext + cancel: a waiting request leaves with the context's error."""
        ticket = self.request()
        if ticket is not None:
            assert not ticket.granted, "a request with capacity would have run"
            self.admitted.remove(ticket)
            self.breaker.release(ticket)
            self.outcomes.append(False)

    def expect_failure(self) -> None:
        assert self.outcomes, "no request finished"
        assert self.outcomes.popleft() is False, "expected request to fail but it succeeded"

    def process_successfully(self) -> None:
        """The barrier lets one executing thunk finish: it must have been granted."""
        ticket = next((t for t in self.admitted if t.granted), None)
        assert ticket is not None, "expected request to succeed but none is executing"
        self.admitted.remove(ticket)
        self.breaker.release(ticket)


@pytest.mark.parametrize(
    ("queue_depth", "max_concurrency", "initial_capacity"),
    [
        pytest.param(0, 1, 1, id="QueueDepth = 0"),
        pytest.param(1, -1, 1, id="MaxConcurrency negative"),
        pytest.param(1, 1, -1, id="InitialCapacity negative"),
        pytest.param(1, 5, 6, id="InitialCapacity out-of-bounds"),
    ],
)
def test_BreakerInvalidConstructor(queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
    with pytest.raises(ValueError):
        Breaker(queue_depth, max_concurrency, initial_capacity)


def test_BreakerReserveOverload() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)  # admits 2
    cb1 = b.try_reserve()
    assert cb1 is not None, "Reserve1 failed"
    assert b.try_reserve() is None, "Reserve2 was an unexpected success"
    b.release(cb1)
    cb2 = b.try_reserve()
    assert cb2 is not None, "Reserve2 failed"
    b.release(cb2)


def test_BreakerOverloadMixed() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    reqs = Requestor(b)
    reqs.request()
    assert b.in_flight == 1
    assert b.try_reserve() is None, "Reserve was an unexpected success"
    reqs.process_successfully()
    cb = b.try_reserve()
    assert cb is not None, "Reserve unexpectedly failed"
    b.release(cb)


def test_BreakerOverload() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    reqs = Requestor(b)
    reqs.request()
    reqs.request()
    reqs.request()  # overshoot by one
    reqs.expect_failure()
    reqs.process_successfully()
    reqs.process_successfully()


def test_BreakerQueueing() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    reqs = Requestor(b)
    # Both admitted although nothing can execute: admission is queue depth + max concurrency.
    assert reqs.request() is not None
    assert reqs.request() is not None
    b.update_capacity(1)
    reqs.process_successfully()
    reqs.process_successfully()


def test_BreakerNoOverload() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    reqs = Requestor(b)
    reqs.request()
    reqs.request()
    reqs.process_successfully()
    reqs.request()
    reqs.process_successfully()
    reqs.request()
    reqs.process_successfully()
    reqs.process_successfully()
    assert not reqs.outcomes  # nothing refused


def test_BreakerCancel() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    reqs = Requestor(b)
    reqs.request_then_cancel()
    reqs.expect_failure()
    # A second one: Go once leaked a pending slot here.
    reqs.request_then_cancel()
    reqs.expect_failure()
    b.update_capacity(1)
    reqs.request()
    reqs.request()
    reqs.request()
    reqs.expect_failure()  # consistently at capacity
    reqs.request_then_cancel()
    reqs.expect_failure()
    reqs.process_successfully()
    reqs.process_successfully()


def test_BreakerUpdateConcurrency() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    b.update_capacity(1)
    assert b.capacity == 1
    b.update_capacity(0)
    assert b.capacity == 0


def test_SemaphoreAcquireHasNoCapacity() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    t = b.reserve()
    assert t is not None and not t.granted, "token acquired but should not have been"


def test_SemaphoreAcquireNonBlockingHasNoCapacity() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    assert b.try_reserve() is None, "should have failed immediately"


def test_SemaphoreAcquireHasCapacity() -> None:
    granted: list[int] = []
    b = Breaker(queue_depth=5, max_concurrency=1, initial_capacity=0)
    for i in range(3):
        b.reserve(lambda i=i: granted.append(i))  # type: ignore[misc]
    b.update_capacity(1)  # allows exactly one acquire
    assert granted == [0]


def test_SemaphoreRelease() -> None:
    b = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    t = b.reserve()
    assert t is not None and t.granted
    b.release(t)  # paired: no error
    with pytest.raises(RuntimeError):
        b.release(t)  # unpaired: Go panics


def test_SemaphoreUpdateCapacity() -> None:
    b = Breaker(queue_depth=1, max_concurrency=3, initial_capacity=1)
    assert b.capacity == 1
    assert b.reserve() is not None
    b.update_capacity(1 + 2)
    assert b.capacity == 3
