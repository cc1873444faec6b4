"""Knative's `pkg/activator/net/lb_policy_test.go` (at the commit CONTRACT.md pins), translated with
Go's test names. A pick reserves a slot on the tracker (Go returns the release callback; here it is
`tracker.release()`); a tracker's weight for power-of-two-choices is its `in_flight` count.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from activator.throttler import FirstAvailablePolicy, PodTracker, PowerOfTwoChoicesPolicy, RoundRobinPolicy


def make_trackers(num: int, cc: int) -> list[PodTracker]:
    """Go's makeTrackers: dests "0", "1", ...; cc = 0 has no breaker."""
    return [PodTracker(str(i), cc) for i in range(num)]


def test_RandomChoice_TwoTrackersDistribution() -> None:
    trackers = make_trackers(2, 0)
    policy = PowerOfTwoChoicesPolicy(random.Random())
    counts: Counter[str] = Counter()
    for _ in range(100):
        pt = policy.pick(trackers)
        assert pt is not None
        pt.release()
        counts[pt.dest] += 1
    # Each is missed with probability 0.5^100.
    assert counts["0"] > 0 and counts["1"] > 0
    assert counts["0"] + counts["1"] == 100


class TestRandomChoice2:
    policy = PowerOfTwoChoicesPolicy(random.Random(1))

    def test_1_tracker(self) -> None:
        trackers = make_trackers(1, 0)
        pt = self.policy.pick(trackers)
        assert pt is trackers[0] and pt.in_flight == 1
        pt = self.policy.pick(trackers)
        assert pt is trackers[0] and pt.in_flight == 2
        pt.release()
        assert pt.in_flight == 1

    def test_2_trackers(self) -> None:
        trackers = make_trackers(2, 0)
        pt = self.policy.pick(trackers)
        assert pt is not None and pt.in_flight == 1
        pt2 = self.policy.pick(trackers)  # must be the other one
        assert pt2 is not None and pt2.in_flight == 1 and pt2 is not pt
        pt2.release()
        pt3 = self.policy.pick(trackers)  # the same one again: the less loaded
        assert pt3 is pt2 and pt3.in_flight == 1

    @pytest.mark.parametrize("seed", range(20))
    def test_3_trackers(self, seed: int) -> None:
        policy = PowerOfTwoChoicesPolicy(random.Random(seed))
        trackers = make_trackers(3, 0)
        pt = policy.pick(trackers)
        assert pt is not None and pt.in_flight == 1
        pt2 = policy.pick(trackers)  # a different one
        assert pt2 is not None and pt2.in_flight == 1
        pt2.release()
        pt3 = policy.pick(trackers)  # the same or the other unused one
        assert pt3 is not None and pt3.in_flight == 1


class TestFirstAvailable:
    def test_1_tracker_1_slot(self) -> None:
        trackers = [PodTracker("this-is-nowhere", 1)]
        policy = FirstAvailablePolicy()
        assert policy.pick(trackers) is not None
        assert policy.pick(trackers) is None

    def test_2_trackers_1_slot(self) -> None:
        trackers = [PodTracker("down-by-the-river", 1), PodTracker("heart-of-gold", 1)]
        policy = FirstAvailablePolicy()
        assert policy.pick(trackers) is trackers[0]
        assert policy.pick(trackers) is trackers[1]


class TestRoundRobin:
    def test_with_cc_1(self) -> None:
        rrp = RoundRobinPolicy()
        trackers = make_trackers(3, 1)
        assert rrp.pick(trackers) is trackers[0]
        assert rrp.pick(trackers) is trackers[1]
        # A shorter list: the index jumps back to 0, which is busy.
        assert rrp.pick(trackers[:1]) is None
        last = rrp.pick(trackers)
        assert last is trackers[2]
        assert rrp.pick(trackers) is None
        last.release()
        assert rrp.pick(trackers) is trackers[2]

    def test_with_cc_2(self) -> None:
        rrp = RoundRobinPolicy()
        trackers = make_trackers(3, 2)
        assert rrp.pick(trackers) is trackers[0]
        assert rrp.pick(trackers) is trackers[1]
        assert rrp.pick(trackers[:1]) is trackers[0]  # shorter list: from 0
        assert rrp.pick(trackers) is trackers[1]
        assert rrp.pick(trackers) is trackers[2]
        # 0 and 1 hold 2 each now: 2 again.
        assert rrp.pick(trackers) is trackers[2]
