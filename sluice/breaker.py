"""The containerConcurrency gate with its bounded queue (CONTRACT.md §2.7; Go `pkg/queue/breaker.go`).

Pure and loop-free: a waiter is a `Ticket` whose `on_grant` callback runs when a
slot frees, so the breaker is tested without an event loop and the proxy pays no
future or task on the fast path (a free slot is granted synchronously).

Go's rules, kept exactly (its `breaker_test.go` is ported in tests/knative_tables):
the constructor takes a queue depth, a max concurrency and an initial capacity;
admission (executing + waiting) is bounded by `queue_depth + max_concurrency`, fixed
at construction, whatever the current capacity; only execution is bounded by the
capacity, which the activator moves as pods come and go (§3.5).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["MAX_BREAKER_CAPACITY", "Breaker", "Ticket", "check_breaker_params"]

# Go's queue.MaxBreakerCapacity (math.MaxInt32): the largest valid max concurrency.
MAX_BREAKER_CAPACITY = 2**31 - 1


def _noop() -> None:
    return None


def check_breaker_params(queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
    """Go's NewBreaker preconditions (it panics; a ValueError here)."""
    if queue_depth <= 0:
        raise ValueError(f"queue depth must be greater than 0, got {queue_depth}")
    if max_concurrency < 0:
        raise ValueError(f"max concurrency must be 0 or greater, got {max_concurrency}")
    if initial_capacity < 0 or initial_capacity > max_concurrency:
        raise ValueError(f"initial capacity must be between 0 and max concurrency, got {initial_capacity}")


class Ticket:
    __slots__ = ("granted", "on_grant", "released")

    def __init__(self, on_grant: Callable[[], None], granted: bool) -> None:
        self.on_grant = on_grant
        self.granted = granted
        self.released = False


class Breaker:
    """At most `capacity` requests execute; the others wait (FIFO); beyond
    `queue_depth + max_concurrency` admitted, `reserve` refuses at once (Go answers
    503 `pending request queue full` then, §2.7)."""

    __slots__ = (
        "_cancelled",
        "capacity",
        "in_flight",
        "max_admitted",
        "max_concurrency",
        "queue_depth",
        "waiting",
    )

    def __init__(self, queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
        check_breaker_params(queue_depth, max_concurrency, initial_capacity)
        self.queue_depth = queue_depth
        self.max_concurrency = max_concurrency
        self.capacity = initial_capacity
        # Go's totalSlots: fixed, so a capacity change never turns admitted requests away.
        self.max_admitted = queue_depth + max_concurrency
        self.in_flight = 0
        self.waiting: deque[Ticket] = deque()
        # Waiters that left (timeout, client gone) still in `waiting`: removed lazily,
        # because deque.remove is O(n) and a mass timeout of a long queue would be O(n²).
        self._cancelled = 0

    @property
    def admitted(self) -> int:
        """Requests executing plus waiting (Go's InFlight, the `kn.serving.queue.depth` gauge)."""
        return self.in_flight + len(self.waiting) - self._cancelled

    def reserve(self, on_grant: Callable[[], None] = _noop) -> Ticket | None:
        """Go's Maybe: admits a request: a granted ticket, a waiting one (`on_grant`
        runs later), or None when `queue_depth + max_concurrency` are admitted."""
        # The capacity never exceeds max_concurrency < max_admitted, so a free slot with
        # nobody waiting is always admissible: no admission check on the fast path.
        if self.in_flight < self.capacity and len(self.waiting) == self._cancelled:
            self.in_flight += 1
            return Ticket(on_grant, True)
        if self.in_flight + len(self.waiting) - self._cancelled >= self.max_admitted:
            return None
        ticket = Ticket(on_grant, False)
        self.waiting.append(ticket)
        return ticket

    def try_reserve(self) -> Ticket | None:
        """Go's Reserve: a slot now or nothing, never a waiting ticket."""
        if self.in_flight < self.capacity and len(self.waiting) == self._cancelled:
            self.in_flight += 1
            return Ticket(_noop, True)
        return None

    def release(self, ticket: Ticket) -> None:
        """Ends a request, granted or still waiting (timeout, client gone).

        Releasing a ticket twice is a programming error (Go panics "release and acquire
        are not paired"); it raises. (A ticket from another breaker is not detected: the
        check would cost the hot path a compare for a bug no caller can make.)"""
        if ticket.released:
            raise RuntimeError("breaker release and reserve are not paired")
        ticket.released = True
        # The callback is usually a bound method of the request holding this ticket: a
        # reference cycle that only the cyclic GC would free (measured: ~6 objects per
        # queued request, and full collections under load).
        ticket.on_grant = _noop
        if ticket.granted:
            self.in_flight -= 1
            if self.waiting:
                self._grant()
            return
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self.waiting):
            self.waiting = deque(t for t in self.waiting if not t.released)
            self._cancelled = 0

    def update_capacity(self, capacity: int) -> None:
        """Go's UpdateConcurrency: the activator resizes its per-revision breaker as pods
        come and go. Admission stays `queue_depth + max_concurrency`."""
        if capacity < 0 or capacity > self.max_concurrency:
            # Go's callers clamp first (throttler.go calculateCapacity); a value outside
            # the range is a caller's bug, not something to absorb silently.
            raise ValueError(f"capacity must be between 0 and {self.max_concurrency}, got {capacity}")
        self.capacity = capacity
        self._grant()

    def _grant(self) -> None:
        waiting = self.waiting
        while waiting and self.in_flight < self.capacity:
            ticket = waiting.popleft()
            if ticket.released:
                self._cancelled -= 1
                continue
            ticket.granted = True
            self.in_flight += 1
            on_grant, ticket.on_grant = ticket.on_grant, _noop
            on_grant()
