"""The throttler (CONTRACT.md §3.5; Go `pkg/activator/net/throttler.go`, `lb_policy.go`).

Per revision: a *revision gate* (Go's revision breaker) admitting at most the
revision's capacity, a FIFO of waiting requests, and one `PodTracker` per healthy
pod (or one ClusterIP tracker). Capacity follows from containerConcurrency, the
trackers this activator is assigned and the number of activators (§3.5 slicing).

Pure and loop-free like `sluice.breaker`: a waiting request is a `Waiter` whose
owner is called back when it gets a slot *and* a pod, so nothing here awaits and
the tests drive it without an event loop. Go re-loops "wait for a revision slot,
then try the pods"; here a grant is only handed out together with a pod slot, so
the loop becomes event-driven: a waiter that cannot get a pod stays at the head of
the queue until a release or a capacity change, which keeps arrival order and
never spins.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sluice.breaker import MAX_BREAKER_CAPACITY, check_breaker_params

__all__ = [
    "BREAKER_QUEUE_DEPTH",
    "MAX_CAPACITY",
    "FirstAvailablePolicy",
    "PodTracker",
    "PowerOfTwoChoicesPolicy",
    "Requester",
    "RevisionThrottler",
    "RoundRobinPolicy",
    "Waiter",
    "assign_slice",
    "policy_for",
    "revision_capacity",
]

# Go's revisionMaxConcurrency (queue.MaxBreakerCapacity, math.MaxInt32): "unlimited" for the
# revision gate, and its max concurrency.
MAX_CAPACITY = MAX_BREAKER_CAPACITY

# Go's breakerQueueDepth: the revision gate's queue depth (§3.5).
BREAKER_QUEUE_DEPTH = 10_000

# No admission bound (cc = 0); the largest short int of compiled (mypyc) code.
_UNBOUNDED = 2**62 - 1


class PodTracker:
    """One backend (pod `ip:port`, or the private ClusterIP). With cc > 0 it admits at
    most cc requests from this activator, through a non-blocking reserve (§3.5)."""

    __slots__ = ("capacity", "dest", "in_flight", "pool", "removed", "target")

    def __init__(self, dest: str, cc: int, pool: Any = None) -> None:
        self.dest = dest
        self.target = dest.encode()
        self.capacity = cc if cc > 0 else MAX_CAPACITY
        self.in_flight = 0  # also the p2c "weight": requests through this activator now
        self.pool = pool
        self.removed = False

    def try_reserve(self) -> bool:
        if self.in_flight < self.capacity:
            self.in_flight += 1
            return True
        return False

    def release(self) -> None:
        if self.in_flight > 0:
            self.in_flight -= 1

    def __repr__(self) -> str:
        return f"PodTracker({self.dest!r}, in_flight={self.in_flight}/{self.capacity})"


# ---- load-balancing policies (§3.5 table) ----------------------------------------


class PowerOfTwoChoicesPolicy:
    """cc = 0: two distinct random trackers, the one with fewer requests in flight
    through this activator wins (tie: coin flip). Reserve always succeeds (no cc)."""

    __slots__ = ("rng",)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, trackers: list[PodTracker]) -> PodTracker | None:
        n = len(trackers)
        if n == 0:
            return None
        if n == 1:
            pick = trackers[0]
        else:
            r1, r2 = 0, 1
            if n > 2:
                # Go: r2 from [0, n-1) shifted past r1, so the two are distinct.
                r1 = self.rng.randrange(n)
                r2 = self.rng.randrange(n - 1)
                if r2 >= r1:
                    r2 += 1
            pick, alt = trackers[r1], trackers[r2]
            if pick.in_flight > alt.in_flight or (pick.in_flight == alt.in_flight and self.rng.random() < 0.5):
                pick = alt
        return pick if pick.try_reserve() else None


class FirstAvailablePolicy:
    """cc 1–3: the first tracker, in sorted order, with a free slot now."""

    __slots__ = ()

    def pick(self, trackers: list[PodTracker]) -> PodTracker | None:
        for tracker in trackers:
            if tracker.try_reserve():
                return tracker
        return None


class RoundRobinPolicy:
    """cc ≥ 4: from a remembered index, the first tracker (wrapping) with a free slot;
    the next scan starts after it (back to 0 if the list shrank below the index)."""

    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index = 0

    def pick(self, trackers: list[PodTracker]) -> PodTracker | None:
        n = len(trackers)
        if self.index >= n:
            self.index = 0
        start = self.index
        for i in range(n):
            p = (start + i) % n
            if trackers[p].try_reserve():
                self.index = p + 1
                return trackers[p]
        return None


Policy = PowerOfTwoChoicesPolicy | FirstAvailablePolicy | RoundRobinPolicy


def policy_for(cc: int, rng: random.Random) -> Policy:
    """Chosen once per revision from containerConcurrency (§3.5)."""
    if cc == 0:
        return PowerOfTwoChoicesPolicy(rng)
    if cc <= 3:
        return FirstAvailablePolicy()
    return RoundRobinPolicy()


# ---- capacity and activator slicing ------------------------------------------------


def assign_slice(trackers: list[PodTracker], index: int, num_activators: int) -> list[PodTracker]:
    """The trackers this activator may use (§3.5), `trackers` sorted by dest string.

    Must match Go exactly when Go and Sluice activators share a revision (§6.4)."""
    n = len(trackers)
    if index < 0 or num_activators <= 1 or n <= 1:
        return list(trackers)
    if num_activators > n:
        return [trackers[index % n]]
    size = n // num_activators
    out = trackers[index * size : (index + 1) * size]
    remnants = n % num_activators
    if index < remnants:
        # The remainder trackers are the last `remnants` of the sorted list.
        out.append(trackers[n - remnants + index])
    return out


def revision_capacity(cc: int, backends: int, assigned: int, num_activators: int) -> int:
    """Go's calculateCapacity (§3.5). `assigned` = trackers this activator uses in pod
    mode (0 in ClusterIP mode, where `backends` = ready pods behind the ClusterIP)."""
    if assigned > 0:
        capacity = cc * assigned
    else:
        capacity = cc * backends
        if capacity > 0:
            capacity = max(1, capacity // max(1, num_activators))
    if backends > 0 and (cc == 0 or capacity > MAX_CAPACITY):
        capacity = MAX_CAPACITY
    return capacity


# ---- the revision gate and its waiters ---------------------------------------------


class Requester(Protocol):
    def on_acquired(self, tracker: PodTracker) -> None: ...
    def revision_gone(self) -> None: ...


_WAITING = 0
_GRANTED = 1
_CANCELLED = 2


class Waiter:
    __slots__ = ("owner", "state", "tracker")

    def __init__(self, owner: Requester) -> None:
        self.owner = owner
        self.state = _WAITING
        self.tracker: PodTracker | None = None

    @property
    def granted(self) -> bool:
        return self.state == _GRANTED


class RevisionThrottler:
    """One revision's gate, queue, trackers and policy (§3.5, §3.6)."""

    __slots__ = (
        "_granting",
        "activator_index",
        "assigned",
        "backends",
        "capacity",
        "cc",
        "cluster_ip",
        "in_flight",
        "live_waiting",
        "make_tracker",
        "max_admitted",
        "num_activators",
        "policy",
        "queue_depth",
        "trackers",
        "waiting",
    )

    def __init__(
        self,
        cc: int,
        queue_depth: int = BREAKER_QUEUE_DEPTH,
        rng: random.Random | None = None,
        make_tracker: Callable[[str, int], PodTracker] | None = None,
    ) -> None:
        self.cc = cc
        self.queue_depth = queue_depth
        if cc > 0:
            # Go's revision breaker: queue.NewBreaker(QueueDepth: breakerQueueDepth, MaxConcurrency:
            # revisionMaxConcurrency, InitialCapacity: 0). Admission is queue depth + max
            # concurrency, fixed: it practically never answers "queue full", requests wait for
            # capacity as pods come and go (§3.5).
            check_breaker_params(queue_depth, MAX_CAPACITY, 0)
            self.max_admitted = queue_depth + MAX_CAPACITY
        else:
            # cc = 0: Go's infiniteBreaker, which takes no parameters and admits everything.
            self.max_admitted = _UNBOUNDED
        self.policy = policy_for(cc, rng or random.Random())
        self.make_tracker = make_tracker or PodTracker
        self.trackers: dict[str, PodTracker] = {}
        self.cluster_ip: PodTracker | None = None
        self.assigned: list[PodTracker] = []
        self.backends = 0
        self.num_activators = 0
        self.activator_index = -1
        self.capacity = 0
        self.in_flight = 0  # requests holding a revision slot (and a tracker)
        self.waiting: deque[Waiter] = deque()  # may hold cancelled waiters (lazy removal)
        self.live_waiting = 0
        self._granting = False

    # ---- backends and activators ------------------------------------------------

    def update_backends(self, dests: Iterable[str], cluster_ip: str | None = None) -> list[PodTracker]:
        """A new healthy set from the backend watcher (§3.4): pod dests, or a ClusterIP
        dest plus the dests counted as ready behind it. Returns the trackers dropped."""
        dests = set(dests)
        dropped: list[PodTracker] = []
        if cluster_ip:
            if self.cluster_ip is None or self.cluster_ip.dest != cluster_ip:
                if self.cluster_ip is not None:
                    dropped.append(self.cluster_ip)
                # No per-pod accounting through a ClusterIP (§3.5 table).
                self.cluster_ip = self.make_tracker(cluster_ip, 0)
            dropped.extend(self.trackers.values())
            self.trackers = {}
        else:
            if self.cluster_ip is not None:
                dropped.append(self.cluster_ip)
                self.cluster_ip = None
            trackers: dict[str, PodTracker] = {}
            for dest in dests:
                tracker = self.trackers.get(dest)
                trackers[dest] = tracker if tracker is not None else self.make_tracker(dest, self.cc)
            dropped.extend(t for d, t in self.trackers.items() if d not in trackers)
            self.trackers = trackers
        for tracker in dropped:
            tracker.removed = True
        self.backends = len(dests)
        self._recompute()
        return dropped

    def update_activators(self, num_activators: int, index: int) -> None:
        """From the revision's public Endpoints (§3.5 slicing)."""
        if (num_activators, index) == (self.num_activators, self.activator_index):
            return
        self.num_activators = num_activators
        self.activator_index = index
        self._recompute()

    def remove_dest(self, dest: str) -> bool:
        """Takes a failed pod out of rotation at once (it returns when re-probed healthy)."""
        tracker = self.trackers.pop(dest, None)
        if tracker is None:
            return False
        tracker.removed = True
        self.backends = max(0, self.backends - 1)
        self._recompute()
        return True

    def _recompute(self) -> None:
        ordered = [self.trackers[d] for d in sorted(self.trackers)]
        if self.cc == 0:
            self.assigned = ordered  # cc = 0: every activator uses every pod
        else:
            self.assigned = assign_slice(ordered, self.activator_index, self.num_activators)
        for tracker in self.assigned:
            tracker.capacity = self.cc if self.cc > 0 else MAX_CAPACITY
        n_assigned = 0 if self.cluster_ip is not None else len(self.assigned)
        self.update_capacity(revision_capacity(self.cc, self.backends, n_assigned, self.num_activators))

    def update_capacity(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._grant()

    # ---- requests ---------------------------------------------------------------

    def acquire(self, owner: Requester) -> Waiter | None:
        """Admits a request. A returned waiter with `granted` set holds a slot and a
        tracker already (the owner is NOT called back); otherwise the owner's
        `on_acquired` runs later. None: `queue_depth + max concurrency` requests are
        admitted already (Go's "pending request queue full"; unreachable in practice)."""
        waiter = Waiter(owner)
        if self.live_waiting == 0 and self.in_flight < self.capacity:
            tracker = self._pick()
            if tracker is not None:
                waiter.state = _GRANTED
                waiter.tracker = tracker
                self.in_flight += 1
                return waiter
        if self.in_flight + self.live_waiting >= self.max_admitted:
            return None
        self.waiting.append(waiter)
        self.live_waiting += 1
        return waiter

    def release(self, waiter: Waiter) -> None:
        """Ends a request, granted (response done) or waiting (timeout, client gone)."""
        state = waiter.state
        if state == _GRANTED:
            waiter.state = _CANCELLED
            tracker = waiter.tracker
            if tracker is not None:
                tracker.release()
            self.in_flight -= 1
            if self.live_waiting:
                self._grant()
        elif state == _WAITING:
            waiter.state = _CANCELLED
            self.live_waiting -= 1
            waiting = self.waiting
            if not self.live_waiting:
                waiting.clear()
            elif len(waiting) > 2 * self.live_waiting + 64:
                # Lazily removed waiters pile up under sustained back-pressure with
                # timeouts; compacting when they outnumber the live ones keeps memory
                # bounded at O(1) amortised cost per release.
                self.waiting = deque(w for w in waiting if w.state == _WAITING)

    def close(self) -> list[Requester]:
        """The revision is gone: every waiting owner, to be answered by the caller."""
        owners = [w.owner for w in self.waiting if w.state == _WAITING]
        for w in self.waiting:
            w.state = _CANCELLED
        self.waiting.clear()
        self.live_waiting = 0
        self.capacity = 0
        return owners

    def _pick(self) -> PodTracker | None:
        cip = self.cluster_ip
        if cip is not None:
            cip.in_flight += 1
            return cip
        return self.policy.pick(self.assigned)

    def _grant(self) -> None:
        if self._granting:
            return  # a callback released a slot: the running loop below picks it up
        self._granting = True
        try:
            # `self.waiting` is re-read each round: a callback may compact it.
            while self.live_waiting and self.in_flight < self.capacity:
                head = self.waiting[0]
                if head.state != _WAITING:
                    self.waiting.popleft()
                    continue
                tracker = self._pick()
                if tracker is None:
                    break  # no pod slot now: wait at the head for the next release
                self.waiting.popleft()
                self.live_waiting -= 1
                head.state = _GRANTED
                head.tracker = tracker
                self.in_flight += 1
                head.owner.on_acquired(tracker)
        finally:
            self._granting = False

    # ---- introspection (metrics, tests) -------------------------------------------

    @property
    def queued(self) -> int:
        return self.live_waiting
