"""RequestStats (CONTRACT.md §2.9) against hand-computed areas, with a fake clock."""

from __future__ import annotations

import pytest

from proxy.stats import RequestStats


def test_time_weighted_average_over_a_window() -> None:
    s = RequestStats(now=0.0)
    s.request_in(0.0, proxied=False)  # c=1 from 0.0
    s.request_in(0.25, proxied=True)  # c=2, p=1 from 0.25
    s.request_out(0.75, proxied=True)  # c=1, p=0 from 0.75
    r = s.report(1.0)
    # area_c = 1*0.25 + 2*0.5 + 1*0.25 = 1.5 over 1 s; area_p = 1*0.5
    assert r.average_concurrency == pytest.approx(1.5)
    assert r.average_proxied_concurrency == pytest.approx(0.5)
    assert r.request_count == 2.0
    assert r.proxied_request_count == 1.0


def test_window_resets_counts_but_keeps_in_flight_concurrency() -> None:
    s = RequestStats(now=0.0)
    s.request_in(0.5, proxied=False)
    s.report(1.0)
    r = s.report(2.0)
    # The request is still in flight for the whole second window.
    assert r.average_concurrency == pytest.approx(1.0)
    assert r.request_count == 0.0


def test_queued_requests_count_as_concurrency() -> None:
    # Events are recorded before the breaker wait (§2.6): 3 arrivals at t=0, cc=1.
    s = RequestStats(now=0.0)
    for _ in range(3):
        s.request_in(0.0, proxied=False)
    assert s.report(1.0).average_concurrency == pytest.approx(3.0)


def test_non_increasing_times_are_ignored() -> None:
    s = RequestStats(now=10.0)
    s.request_in(10.0, proxied=False)
    s.request_out(9.0, proxied=False)  # a clock step backwards adds no negative area
    r = s.report(11.0)
    assert r.average_concurrency == pytest.approx(0.0)
    assert r.request_count == 1.0


def test_empty_window_reports_zero() -> None:
    s = RequestStats(now=5.0)
    r = s.report(5.0)
    assert (r.average_concurrency, r.request_count) == (0.0, 0.0)
