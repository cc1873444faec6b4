"""The containerConcurrency gate with its bounded queue (CONTRACT.md §2.7).

Pure and loop-free: a waiter is a `Ticket` whose `on_grant` callback runs when a
slot frees, so the breaker is tested without an event loop and the proxy pays no
future or task on the fast path (a free slot is granted synchronously).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["Breaker", "Ticket"]


def _noop() -> None:
    return None


class Ticket:
    __slots__ = ("granted", "on_grant", "released")

    def __init__(self, on_grant: Callable[[], None], granted: bool) -> None:
        self.on_grant = on_grant
        self.granted = granted
        self.released = False


class Breaker:
    """At most `capacity` requests execute; up to `queue_depth` more wait (FIFO);
    beyond `capacity + queue_depth` admitted, `reserve` refuses at once (Go's
    breaker answers 503 `pending request queue full` then)."""

    __slots__ = ("_cancelled", "capacity", "in_flight", "max_admitted", "queue_depth", "waiting")

    def __init__(self, capacity: int, queue_depth: int) -> None:
        if capacity < 0 or queue_depth < 0:
            raise ValueError("breaker capacity and queue depth must be >= 0")
        self.capacity = capacity
        self.queue_depth = queue_depth
        self.max_admitted = capacity + queue_depth
        self.in_flight = 0
        self.waiting: deque[Ticket] = deque()
        # Waiters that left (timeout, client gone) still in `waiting`: removed lazily,
        # because deque.remove is O(n) and a mass timeout of a long queue would be O(n²).
        self._cancelled = 0

    @property
    def admitted(self) -> int:
        """Requests executing plus waiting (the `kn.serving.queue.depth` gauge)."""
        return self.in_flight + len(self.waiting) - self._cancelled

    def reserve(self, on_grant: Callable[[], None] = _noop) -> Ticket | None:
        """Admits a request: a granted ticket, a waiting one (`on_grant` runs later),
        or None when the queue is full."""
        if self.in_flight < self.capacity and len(self.waiting) == self._cancelled:
            self.in_flight += 1
            return Ticket(on_grant, True)
        if self.admitted >= self.max_admitted:
            return None
        ticket = Ticket(on_grant, False)
        self.waiting.append(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Ends a request, granted or still waiting (timeout, client gone). Idempotent."""
        if ticket.released:
            return
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
        """The activator resizes its per-revision breaker as pods come and go."""
        self.capacity = max(0, capacity)
        self.max_admitted = self.capacity + self.queue_depth
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
