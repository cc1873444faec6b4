"""Knative's `pkg/activator/net/throttler_test.go` (at the commit CONTRACT.md pins), translated with
Go's test names.

Go's revisionThrottler is Sluice's `RevisionThrottler` (the revision breaker, the pod trackers and
the policy together); Go's Throttler with its informers is Sluice's `Revisions` fed the same
objects (Revision, the backend watcher's update, the public Endpoints). Go's requests are
goroutines in `Try`; here a request is an owner whose `acquire` is granted now or later, and a
timed-out request releases its waiting slot. Go's infinite breaker reports capacity 1 when open;
Sluice's cc = 0 gate opens to `MAX_CAPACITY`, so "1" reads "open" below.
"""

from __future__ import annotations

from typing import Any

import pytest

from activator.backends import LABEL_REVISION, LABEL_SERVICE_TYPE, PoolRegistry
from activator.revisions import Revisions, activator_slice
from activator.throttler import (
    MAX_CAPACITY,
    PodTracker,
    PowerOfTwoChoicesPolicy,
    RevisionThrottler,
    Waiter,
    assign_slice,
    revision_capacity,
)

NS, REV = "test-namespace", "test-revision"
KEY = (NS, REV)
CLUSTER_IP = "129.0.0.1:1234"


class Request:
    """One Try: records the dest it was given, or that the revision went away."""

    def __init__(self) -> None:
        self.tracker: PodTracker | None = None
        self.gone = False

    def on_acquired(self, tracker: PodTracker) -> None:
        self.tracker = tracker

    def revision_gone(self) -> None:
        self.gone = True


def try_(rt: RevisionThrottler) -> tuple[Request, Waiter | None]:
    req = Request()
    waiter = rt.acquire(req)
    if waiter is not None and waiter.granted:
        req.tracker = waiter.tracker
    return req, waiter


def open_(capacity: int) -> int:
    """Go's infinite-breaker capacity (0 or 1) for a Sluice capacity."""
    return 1 if capacity > 0 else 0


def dests(n: int) -> set[str]:
    return {f"10.0.0.{i}:8012" for i in range(n)}


# ---- TestThrottlerUpdateCapacity -----------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "num_activators", "activator_index", "cc", "pods", "want", "check_assigned"),
    [
        pytest.param(1, 0, 0, 10, 0, 1 * 10, False, id="capacity: 1, cc: 10"),
        pytest.param(10, 0, 0, 10, 0, 10 * 10, False, id="capacity: 10, cc: 10"),
        pytest.param(100, 0, 0, 10, 0, 100 * 10, False, id="capacity: 100, cc: 10"),
        pytest.param(10, 5, 0, 10, 0, 10 * 10 // 5, False, id="numActivators: 5, capacity: 10, cc: 10"),
        pytest.param(10, 200, 0, 10, 0, 1, False, id="numActivators: 200, capacity: 10, cc: 10"),
        pytest.param(0, 200, 0, 10, 0, 0, False, id="numActivators: 200, capacity: 0, cc: 10"),
        pytest.param(0, 0, 0, 0, 0, 0, False, id="newInfiniteBreaker, numActivators: 0, capacity: 0, cc: 0"),
        pytest.param(1, 0, 0, 0, 0, 1, False, id="newInfiniteBreaker, numActivators: 0, capacity: 1, cc: 0"),
        pytest.param(10, 0, 0, 0, 0, 1, False, id="newInfiniteBreaker, numActivators: 0, capacity: 10, cc: 0"),
        pytest.param(0, 200, 0, 0, 0, 0, False, id="newInfiniteBreaker, numActivators: 200, capacity: 0, cc: 0"),
        pytest.param(1, 200, 0, 0, 0, 1, False, id="newInfiniteBreaker, numActivators: 200, capacity: 1, cc: 0"),
        pytest.param(0, 1, 0, 10, 1, 10, False, id="numActivators: 1, capacity: 0, cc: 10, pods: 1"),
        pytest.param(-1, 1, 0, 10, 2, 20, False, id="2 backends. numActivators: 1, capacity: -1, cc: 10, pods: 2"),
        pytest.param(-1, 2, 0, 10, 2, 10, False, id="2 activators. numActivators: 2, capacity: -1, cc: 10, pods: 2"),
        pytest.param(-1, 2, 0, 10, 3, 20, False,
                     id="numActivators: 2, index: 0, pods: 3, cc: 1. Capacity is expected to 20 (2 * 10)"),
        pytest.param(-1, 2, 1, 10, 3, 10, False,
                     id="numActivators: 2, index: 1, pods: 3, cc: 1. Capacity is expected to 10 (1 * 10)"),
        pytest.param(5, 2, 0, 1, 5, 3, False,
                     id="numActivators: 2, index: 0, pods: 5, cc: 1. Capacity is expected to 3 (2 + 1)"),
        pytest.param(5, 2, 1, 1, 5, 2, False,
                     id="numActivators: 2, index: 1, pods: 5, cc: 1. Capacity is expected to 2"),
        pytest.param(1, 2, 1, 0, 3, 1, True, id="Infinite capacity with podIP trackers."),
    ],
)  # fmt: skip
def test_ThrottlerUpdateCapacity(
    capacity: int, num_activators: int, activator_index: int, cc: int, pods: int, want: int, check_assigned: bool
) -> None:
    rt = RevisionThrottler(cc, queue_depth=1)
    rt.update_activators(num_activators, activator_index)
    if pods:
        # Pod mode: the trackers decide; Go's backend count (`capacity`) only says "some".
        rt.update_backends(dests(pods))
    else:
        # No trackers: Go's capacity is the ready backend count behind the ClusterIP.
        rt.update_backends(dests(max(0, capacity)), cluster_ip=CLUSTER_IP)
    got = open_(rt.capacity) if cc == 0 else rt.capacity
    assert got == want
    if check_assigned:
        assert len(rt.assigned) == len(rt.trackers)


def test_ThrottlerCalculateCapacity() -> None:
    # "over revisionMaxConcurrency": clamped to the breaker's maximum.
    assert revision_capacity(0, 1, MAX_CAPACITY + 5, 1) == MAX_CAPACITY
    assert revision_capacity(1, 1, MAX_CAPACITY + 5, 1) == MAX_CAPACITY


# ---- Throttler-level cases, through Revisions ---------------------------------------------


def revision(cc: int, protocol: str = "http1") -> dict[str, Any]:
    ports = [{"name": "h2c", "containerPort": 8080}] if protocol == "h2c" else []
    return {
        "metadata": {"namespace": NS, "name": REV},
        "spec": {"containerConcurrency": cc, "containers": [{"image": "x", "ports": ports}]},
    }


def public_endpoints(ips: list[str], port_name: str = "http") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NS,
            "name": REV,
            "labels": {LABEL_SERVICE_TYPE: "Public", LABEL_REVISION: REV},
        },
        "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": port_name, "port": 8012}]}],
    }


def throttler_for(cc: int, protocol: str = "http1", own_ip: str = "130.0.0.2") -> Revisions:
    revs = Revisions(PoolRegistry(), own_ip)
    revs.revision_event("ADDED", revision(cc, protocol))
    return revs


def test_ThrottlerErrorNoRevision() -> None:
    revs = throttler_for(1)
    revs.publish(KEY, frozenset({"128.0.0.1:1234"}), None)
    entry = revs.get(KEY)
    assert entry is not None
    req, waiter = try_(entry.throttler)
    assert waiter is not None and waiter.granted and req.tracker is not None
    entry.throttler.release(waiter)
    # A request waiting when the revision goes is answered, and the revision is unknown after.
    entry.throttler.update_backends(frozenset())
    waiting, w = try_(entry.throttler)
    assert w is not None and not w.granted
    revs.revision_event("DELETED", revision(1))
    assert waiting.gone and revs.get(KEY) is None


def test_ThrottlerErrorOneTimesOut() -> None:
    revs = throttler_for(1)
    revs.publish(KEY, frozenset({"128.0.0.1:1234"}), CLUSTER_IP)
    entry = revs.get(KEY)
    assert entry is not None
    rt = entry.throttler
    first, w1 = try_(rt)  # holds the only slot
    second, w2 = try_(rt)
    assert w1 is not None and w1.granted and w2 is not None and not w2.granted
    rt.release(w2)  # its context's deadline: it leaves the queue
    assert second.tracker is None and rt.queued == 0
    assert first.tracker is not None and first.tracker.dest == CLUSTER_IP
    rt.release(w1)


@pytest.mark.parametrize(
    ("cc", "updates", "requests", "want_dests"),
    [
        pytest.param(1, [({"128.0.0.1:1234"}, None), ({"128.0.0.1:1234"}, None)], 1, {"128.0.0.1:1234"},
                     id="single healthy podIP"),
        pytest.param(0, [({"128.0.0.2:1234", "128.0.0.32:1212"}, None), ({"128.0.0.1:1234"}, None)], 1,
                     {"128.0.0.1:1234"}, id="single healthy podIP, infinite cc"),
        pytest.param(1, [({"128.0.0.1:1234", "128.0.0.2:1234"}, None), ({"128.0.0.1:1234"}, CLUSTER_IP)], 1,
                     {CLUSTER_IP}, id="single healthy clusterIP"),
        pytest.param(1, [({"128.0.0.3:1234"}, None), ({"128.0.0.1:1234", "128.0.0.2:1234"}, None)], 2,
                     {"128.0.0.1:1234", "128.0.0.2:1234"}, id="spread podIP load"),
        pytest.param(3, [({"128.0.0.1:1234", "128.0.0.2:1234", "128.0.0.2:4236", "128.0.0.2:1233",
                           "128.0.0.2:1230"}, None)], 3, {"128.0.0.1:1234"}, id="clumping test"),
        pytest.param(5, [({"128.0.0.1:1234", "128.0.0.2:1234", "211.212.213.214:80"}, None)], 3,
                     {"128.0.0.1:1234", "128.0.0.2:1234", "211.212.213.214:80"}, id="roundrobin test"),
        pytest.param(1, [({"128.0.0.1:1234", "128.0.0.2:1234"}, CLUSTER_IP)], 2, {CLUSTER_IP},
                     id="multiple ClusterIP requests"),
    ],
)  # fmt: skip
def test_ThrottlerSuccesses(
    cc: int, updates: list[tuple[set[str], str | None]], requests: int, want_dests: set[str]
) -> None:
    revs = throttler_for(cc)
    revs.public_endpoints_event("ADDED", public_endpoints(["130.0.0.2"]))
    for ds, cip in updates:
        revs.publish(KEY, frozenset(ds), cip)
    entry = revs.get(KEY)
    assert entry is not None
    rt = entry.throttler
    last = updates[-1][0]
    assert rt.activator_index != -1
    if cc != 0:
        assert rt.capacity == len(last) * cc
    else:
        assert len(rt.assigned) == len(last)
    assert [t.dest for t in rt.assigned] == sorted(t.dest for t in rt.assigned)
    # All requests are in flight together (Go holds each in Try until all arrived).
    got = set()
    for _ in range(requests):
        req, waiter = try_(rt)
        assert waiter is not None and waiter.granted and req.tracker is not None
        got.add(req.tracker.dest)
    assert got == want_dests


def test_PodAssignmentFinite() -> None:
    rt = RevisionThrottler(42, queue_depth=1)
    rt.update_activators(4, 0)
    rt.update_backends({"ip4", "ip3", "ip5", "ip2", "ip1", "ip0"})
    assert len(rt.trackers) == 6
    # 6 = 4 x 1 + 2: indexes 0 and 1 get 2 pods, the others 1.
    assert {t.dest for t in rt.assigned} == {"ip0", "ip4"}
    assert rt.capacity == 2 * 42
    assert rt.assigned[0].capacity == 42  # exclusive
    assert rt.assigned[1].capacity == 42  # shared
    rt.update_backends(set())  # scale to zero
    assert len(rt.trackers) == 0 and len(rt.assigned) == 0 and rt.capacity == 0


def test_PodAssignmentInfinite() -> None:
    rt = RevisionThrottler(0, queue_depth=1)
    rt.update_backends({"ip3", "ip2", "ip1"})
    assert len(rt.trackers) == 3 and len(rt.assigned) == 3
    assert open_(rt.capacity) == 1
    assert rt.assigned[0].try_reserve()  # no per-pod limit with cc = 0
    rt.update_backends(set())
    assert len(rt.trackers) == 0 and len(rt.assigned) == 0 and rt.capacity == 0


def test_ActivatorsIndexUpdate() -> None:
    revs = throttler_for(1, "h2c")
    possible = {"128.0.0.1:1234", "128.0.0.2:1234", "128.0.0.23:1234"}
    revs.publish(KEY, frozenset(possible), None)
    revs.public_endpoints_event("ADDED", public_endpoints(["130.0.0.1", "130.0.0.2"], "http2"))
    entry = revs.get(KEY)
    assert entry is not None
    rt = entry.throttler
    assert rt.capacity == 1
    assert (rt.num_activators, rt.activator_index) == (2, 1)
    assert len(rt.assigned) == 1
    revs.public_endpoints_event("MODIFIED", public_endpoints(["130.0.0.2"], "http2"))
    assert (rt.num_activators, rt.activator_index) == (1, 0)


def test_MultipleActivators() -> None:
    revs = throttler_for(1)
    possible = {"128.0.0.1:1234", "128.0.0.2:1234", "128.0.0.23:1234"}
    revs.publish(KEY, frozenset(possible), None)
    revs.public_endpoints_event("ADDED", public_endpoints(["130.0.0.1", "130.0.0.2"]))
    entry = revs.get(KEY)
    assert entry is not None
    rt = entry.throttler
    assert rt.capacity == 1
    # 2 activators, 3 pods: one request gets through, the second times out waiting.
    first, w1 = try_(rt)
    second, w2 = try_(rt)
    assert w1 is not None and w1.granted and w2 is not None and not w2.granted
    rt.release(w2)
    assert second.tracker is None
    assert first.tracker is not None and first.tracker.dest in possible


def test_InfiniteBreakerCreation() -> None:
    # cc = 0 takes Go's infinite breaker, which ignores the breaker parameters (even depth 0).
    rt = RevisionThrottler(0, queue_depth=0)
    assert isinstance(rt.policy, PowerOfTwoChoicesPolicy)


def test_InfiniteBreaker() -> None:
    rt = RevisionThrottler(0, queue_depth=1)
    assert open_(rt.capacity) == 0
    assert PodTracker("x", 0).try_reserve()  # Reserve always succeeds
    req, w = try_(rt)  # no capacity: waits, then its context ends
    assert w is not None and not w.granted
    rt.release(w)
    rt.update_backends({"10.0.0.1:8012"})
    assert open_(rt.capacity) == 1
    for _ in range(2):  # runs at once, twice
        req, w = try_(rt)
        assert w is not None and w.granted
        rt.release(w)
    rt.update_backends(set())  # scale to zero
    req, w = try_(rt)
    assert w is not None and not w.granted and open_(rt.capacity) == 0
    rt.update_backends({"10.0.0.1:8012"})  # capacity shows up: the waiter runs
    assert w.granted and req.tracker is not None


@pytest.mark.parametrize(
    ("ips", "want"),
    [
        pytest.param([], -1, id="empty"),
        pytest.param(["11.11.11.11", "11.11.11.12"], -1, id="missing"),
        pytest.param(["10.10.10.3", "11.11.11.11"], 0, id="first"),
        pytest.param(["10.10.10.1", "10.10.10.2", "10.10.10.3", "11.11.11.11"], 2, id="middle"),
        pytest.param(["10.10.10.1", "10.10.10.2", "10.10.10.3"], 2, id="last"),
    ],
)
def test_InferIndex(ips: list[str], want: int) -> None:
    found = activator_slice(public_endpoints(ips), "http", "10.10.10.3")
    assert (found[1] if found is not None else -1) == want


@pytest.mark.parametrize(
    ("pods", "acts", "idx", "want_b", "want_e", "want_r"),
    [
        pytest.param(1, 1, 0, 0, 1, 0, id="1 pod, 1 activator"),
        pytest.param(1, 2, 0, 0, 1, 0, id="1 pod, 2 activators, this is 0"),
        pytest.param(1, 2, 1, 0, 1, 0, id="1 pod, 2 activators, this is 1"),
        pytest.param(2, 3, 1, 1, 2, 0, id="2 pods, 3 activators, this is 1"),
        pytest.param(2, 3, 2, 0, 1, 0, id="2 pods, 3 activators, this is 2"),
        pytest.param(3, 3, 2, 2, 3, 0, id="3 pods, 3 activators, this is 2"),
        pytest.param(10, 3, 0, 0, 3, 1, id="10 pods, 3 activators this is 0"),
        pytest.param(10, 3, 1, 3, 6, 1, id="10 pods, 3 activators this is 1"),
        pytest.param(10, 3, 2, 6, 9, 1, id="10 pods, 3 activators this is 2"),
        pytest.param(150, 5, 0, 0, 30, 0, id="150 pods, 5 activators this is 0"),
        pytest.param(150, 5, 1, 30, 60, 0, id="150 pods, 5 activators this is 1"),
        pytest.param(150, 5, 4, 120, 150, 0, id="150 pods, 5 activators this is 4"),
    ],
)
def test_PickIndices(pods: int, acts: int, idx: int, want_b: int, want_e: int, want_r: int) -> None:
    # Go's pickIndices is folded into assign_slice: its slice is [begin, end) plus remnant
    # number `idx` (of the last `remnants` trackers) when idx < remnants.
    trackers = [PodTracker(f"{i:03d}", 1) for i in range(pods)]
    got = assign_slice(trackers, idx, acts)
    want = trackers[want_b:want_e]
    if idx < want_r:
        want = [*want, trackers[pods - want_r + idx]]
    assert got == want


class TestAssignSlice:
    trackers = [PodTracker("1", 0), PodTracker("2", 0), PodTracker("3", 0)]

    def test_notrackers(self) -> None:
        assert assign_slice([], 0, 1) == []

    def test_idx_1_na_1(self) -> None:
        assert assign_slice(self.trackers, 1, 1) == self.trackers

    def test_idx_minus_1(self) -> None:
        assert assign_slice(self.trackers, -1, 1) == self.trackers

    def test_idx_1_na_3(self) -> None:
        assert assign_slice(list(self.trackers), 1, 3) == self.trackers[1:2]

    def test_len_1(self) -> None:
        assert assign_slice(self.trackers[0:1], 1, 3) == self.trackers[0:1]

    def test_idx_1_breaker(self) -> None:
        trackers = [PodTracker("1", 1), PodTracker("2", 1), PodTracker("3", 1)]
        got = assign_slice(list(trackers), 1, 2)
        assert got == trackers[1:2]
        assert got[0].in_flight == 0  # slicing does not touch the trackers
