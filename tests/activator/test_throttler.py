"""Throttler algorithms (CONTRACT.md §3.5), table-driven and without an event loop."""

from __future__ import annotations

import random

import pytest

from activator.throttler import (
    MAX_CAPACITY,
    FirstAvailablePolicy,
    PodTracker,
    PowerOfTwoChoicesPolicy,
    RevisionThrottler,
    RoundRobinPolicy,
    assign_slice,
    policy_for,
    revision_capacity,
)


def trackers(n: int, cc: int = 1) -> list[PodTracker]:
    # Sorted by dest string, as the throttler sorts them.
    return sorted((PodTracker(f"10.0.0.{i}:8012", cc) for i in range(n)), key=lambda t: t.dest)


def dests(ts: list[PodTracker]) -> list[str]:
    return [t.dest for t in ts]


class Owner:
    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name
        self.tracker: PodTracker | None = None
        self.gone = False

    def on_acquired(self, tracker: PodTracker) -> None:
        self.tracker = tracker
        self.log.append(self.name)

    def revision_gone(self) -> None:
        self.gone = True


# ---- slicing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "index", "activators", "expected"),
    [
        (5, -1, 3, [0, 1, 2, 3, 4]),  # index unknown: everything
        (5, 0, 1, [0, 1, 2, 3, 4]),  # a single activator
        (1, 2, 3, [0]),  # one tracker
        (0, 1, 3, []),
        (2, 0, 5, [0]),  # more activators than trackers: index mod n
        (2, 3, 5, [1]),
        (2, 4, 5, [0]),
        (3, 0, 3, [0]),  # equal: one each
        (3, 2, 3, [2]),
        (7, 0, 3, [0, 1, 6]),  # size 2, remnants 1 -> index 0 takes the last one
        (7, 1, 3, [2, 3]),
        (7, 2, 3, [4, 5]),
        (8, 0, 3, [0, 1, 6]),  # size 2, remnants 2 (trackers 6, 7)
        (8, 1, 3, [2, 3, 7]),
        (8, 2, 3, [4, 5]),
        (10, 3, 4, [6, 7]),  # size 2, remnants 2: only indexes 0, 1 get one
        (10, 1, 4, [2, 3, 9]),
    ],
)
def test_assign_slice(n: int, index: int, activators: int, expected: list[int]) -> None:
    ts = trackers(n)
    assert dests(assign_slice(ts, index, activators)) == [ts[i].dest for i in expected]


def test_slices_of_all_activators_partition_the_trackers() -> None:
    for n in range(1, 20):
        for activators in range(2, n + 1):
            ts = trackers(n)
            got = [t.dest for i in range(activators) for t in assign_slice(ts, i, activators)]
            assert sorted(got) == sorted(dests(ts)), (n, activators)


# ---- capacity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "backends", "assigned", "activators", "expected"),
    [
        (0, 0, 0, 0, 0),  # cc=0, no backends: the infinite breaker is closed
        (0, 3, 3, 1, MAX_CAPACITY),  # cc=0 with backends: open
        (10, 0, 0, 1, 0),
        (10, 3, 3, 1, 30),  # pod mode: cc x assigned trackers
        (10, 3, 1, 3, 10),
        (2, 5, 2, 2, 4),
        (10, 4, 0, 3, 13),  # ClusterIP: cc*ready / activators
        (1, 1, 0, 3, 1),  # ClusterIP: at least 1
        (10, 4, 0, 0, 40),  # activators unknown -> divide by 1
        (0, 4, 0, 2, MAX_CAPACITY),
        (2**30, 4, 4, 1, MAX_CAPACITY),  # clamped
    ],
)
def test_revision_capacity(cc: int, backends: int, assigned: int, activators: int, expected: int) -> None:
    assert revision_capacity(cc, backends, assigned, activators) == expected


# ---- policies -------------------------------------------------------------------------------


def test_policy_choice_by_cc() -> None:
    rng = random.Random(1)
    assert isinstance(policy_for(0, rng), PowerOfTwoChoicesPolicy)
    for cc in (1, 2, 3):
        assert isinstance(policy_for(cc, rng), FirstAvailablePolicy)
    for cc in (4, 10, 1000):
        assert isinstance(policy_for(cc, rng), RoundRobinPolicy)


def test_first_available_fills_in_sorted_order() -> None:
    ts = trackers(3, cc=2)
    policy = FirstAvailablePolicy()
    picks = [policy.pick(ts) for _ in range(7)]
    assert [p.dest if p else None for p in picks] == [ts[0].dest] * 2 + [ts[1].dest] * 2 + [ts[2].dest] * 2 + [None]
    ts[1].release()
    assert policy.pick(ts) is ts[1]


def test_round_robin_rotates_and_skips_full() -> None:
    ts = trackers(3, cc=4)
    policy = RoundRobinPolicy()
    assert [policy.pick(ts) for _ in range(4)] == [ts[0], ts[1], ts[2], ts[0]]
    ts[1].in_flight = 4  # full
    assert [policy.pick(ts) for _ in range(2)] == [ts[2], ts[0]]
    policy.index = 7  # list shrank below the index: restart at 0
    assert policy.pick(ts[:2]) is ts[0]


def test_power_of_two_prefers_the_less_loaded() -> None:
    ts = trackers(2, cc=0)
    ts[0].in_flight = 5
    policy = PowerOfTwoChoicesPolicy(random.Random(3))
    assert all(policy.pick(ts) is ts[1] for _ in range(3))  # 0 < 5, then 1, 2 < 5
    single = trackers(1, cc=0)
    assert policy.pick(single) is single[0]
    assert policy.pick([]) is None


def test_power_of_two_picks_distinct_pairs() -> None:
    ts = trackers(5, cc=0)
    policy = PowerOfTwoChoicesPolicy(random.Random(7))
    for _ in range(200):
        pick = policy.pick(ts)
        assert pick is not None
    # Load stays balanced: no tracker ends far above the others.
    loads = [t.in_flight for t in ts]
    assert sum(loads) == 200 and max(loads) - min(loads) <= 2


# ---- the revision throttler -------------------------------------------------------------------


def test_requests_wait_for_backends_then_go_in_arrival_order() -> None:
    rt = RevisionThrottler(cc=1, rng=random.Random(1))
    log: list[str] = []
    owners = [Owner(log, f"r{i}") for i in range(3)]
    waiters = [rt.acquire(o) for o in owners]
    assert all(w is not None and not w.granted for w in waiters)
    assert rt.queued == 3 and rt.capacity == 0
    rt.update_backends({"10.0.0.1:8012"})
    assert rt.capacity == 1 and log == ["r0"]
    # A second pod becoming healthy takes the next queued request at once.
    rt.update_backends({"10.0.0.1:8012", "10.0.0.2:8012"})
    assert log == ["r0", "r1"]
    assert owners[1].tracker is not None and owners[1].tracker.dest == "10.0.0.2:8012"
    waiter0 = waiters[0]
    assert waiter0 is not None
    rt.release(waiter0)
    assert log == ["r0", "r1", "r2"] and rt.queued == 0
    assert owners[2].tracker is not None and owners[2].tracker.dest == "10.0.0.1:8012"


def test_a_pod_never_exceeds_cc() -> None:
    rt = RevisionThrottler(cc=2)
    rt.update_backends({"a:1", "b:1"})
    log: list[str] = []
    owners = [Owner(log, str(i)) for i in range(10)]
    waiters = [rt.acquire(o) for o in owners]
    granted = [w for w in waiters if w is not None and w.granted]
    assert len(granted) == 4 and rt.queued == 6
    assert sorted(t.in_flight for t in rt.trackers.values()) == [2, 2]
    for w in granted:
        rt.release(w)
        assert all(t.in_flight <= 2 for t in rt.trackers.values())
    assert rt.in_flight == 4 and rt.queued == 2


def test_admission_is_queue_depth_plus_max_concurrency() -> None:
    # Go's revision breaker: QueueDepth breakerQueueDepth, MaxConcurrency revisionMaxConcurrency
    # (§3.5): requests beyond the queue depth still wait for capacity rather than get a 503.
    rt = RevisionThrottler(cc=1, queue_depth=2)
    assert rt.max_admitted == 2 + MAX_CAPACITY
    log: list[str] = []
    waiters = [rt.acquire(Owner(log, str(i))) for i in range(5)]
    assert all(w is not None and not w.granted for w in waiters) and rt.queued == 5
    rt.update_backends({"10.0.0.1:8012"})
    assert log == ["0"]
    # The bound itself, reached by shrinking it (the real one is 2**31 + 1 requests).
    rt.max_admitted = 5
    assert rt.acquire(Owner(log, "x")) is None


def test_breaker_parameters_as_go() -> None:
    with pytest.raises(ValueError):
        RevisionThrottler(cc=1, queue_depth=0)  # queue.NewBreaker panics on depth 0
    # cc = 0 is Go's infinite breaker: no parameters, no admission bound.
    assert RevisionThrottler(cc=0, queue_depth=0).max_admitted > 2**40


def test_cancelled_waiters_are_skipped_and_compacted() -> None:
    rt = RevisionThrottler(cc=1, queue_depth=100_000)
    log: list[str] = []
    keep = rt.acquire(Owner(log, "keep"))
    assert keep is not None
    for i in range(1000):
        w = rt.acquire(Owner(log, f"x{i}"))
        assert w is not None
        rt.release(w)
    assert rt.queued == 1 and len(rt.waiting) < 200  # compaction kept the deque small
    rt.update_backends({"a:1"})
    assert log == ["keep"]


def test_cluster_ip_mode_and_back() -> None:
    rt = RevisionThrottler(cc=10)
    rt.update_activators(2, 0)
    rt.update_backends({"p1:8012", "p2:8012", "p3:8012"}, cluster_ip="10.96.0.1:80")
    assert rt.cluster_ip is not None and not rt.trackers
    assert rt.capacity == 15  # 10 * 3 / 2
    log: list[str] = []
    w = rt.acquire(Owner(log, "a"))
    assert w is not None and w.granted and w.tracker is rt.cluster_ip
    dropped = rt.update_backends({"p1:8012"})
    assert rt.cluster_ip is None and [t.dest for t in dropped] == ["10.96.0.1:80"]
    assert rt.capacity == 10


def test_activator_slicing_shapes_capacity() -> None:
    rt = RevisionThrottler(cc=5)
    rt.update_backends({f"10.0.0.{i}:8012" for i in range(4)})
    assert rt.capacity == 20
    rt.update_activators(2, 1)
    assert [t.dest for t in rt.assigned] == ["10.0.0.2:8012", "10.0.0.3:8012"]
    assert rt.capacity == 10
    # cc = 0: every activator uses every pod.
    rt0 = RevisionThrottler(cc=0)
    rt0.update_backends({"a:1", "b:1"})
    rt0.update_activators(2, 1)
    assert len(rt0.assigned) == 2 and rt0.capacity == MAX_CAPACITY


def test_remove_dest_takes_a_pod_out_at_once() -> None:
    rt = RevisionThrottler(cc=1)
    rt.update_backends({"a:1", "b:1"})
    assert rt.remove_dest("a:1") and rt.capacity == 1
    assert not rt.remove_dest("a:1")
    log: list[str] = []
    w = rt.acquire(Owner(log, "x"))
    assert w is not None and w.tracker is not None and w.tracker.dest == "b:1"


def test_close_returns_every_waiting_owner() -> None:
    rt = RevisionThrottler(cc=1)
    log: list[str] = []
    owners = [Owner(log, str(i)) for i in range(3)]
    ws = [rt.acquire(o) for o in owners]
    assert ws[1] is not None
    rt.release(ws[1])
    assert rt.close() == [owners[0], owners[2]]
    assert rt.queued == 0
