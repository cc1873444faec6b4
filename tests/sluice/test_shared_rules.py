"""Rules shared by several components: cluster-domain resolution and the §2.8 timers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import cluster_domain
from sluice.http.deadlines import RequestTimeouts
from sluice.http.server import Exchange, HttpServer, ServerConnection


def test_cluster_domain_precedence(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.10\nsearch default.svc.corp.example. svc.corp.example. corp.example\n")
    assert cluster_domain({"CLUSTER_DOMAIN": "explicit.local."}, str(resolv)) == "explicit.local"
    assert cluster_domain({}, str(resolv)) == "corp.example"
    assert cluster_domain({}, str(tmp_path / "missing")) == "cluster.local"


def _exchange() -> Exchange:
    return Exchange(ServerConnection(HttpServer(lambda ex: None)))


@pytest.mark.parametrize(
    ("timeouts", "started", "last_write", "status", "now", "expired"),
    [
        (RequestTimeouts(total=10), False, 0.0, 0, 9.9, False),
        (RequestTimeouts(total=10), True, 9.0, 200, 10.0, True),  # total applies after the start too
        (RequestTimeouts(response_start=2), False, 0.0, 0, 2.0, True),
        (RequestTimeouts(response_start=2), True, 0.5, 200, 5.0, False),  # discarded once writing
        (RequestTimeouts(idle=3), False, 0.0, 0, 3.0, True),  # before any write: a start timeout
        (RequestTimeouts(idle=3), True, 4.0, 200, 6.9, False),
        (RequestTimeouts(idle=3), True, 4.0, 200, 7.0, True),
        (RequestTimeouts(idle=1, response_start=1), True, 0.1, 101, 50.0, False),  # a tunnel
        (RequestTimeouts(total=30, idle=1), True, 0.1, 101, 30.0, True),  # ... bounded by the total
    ],
)
def test_request_timeouts(
    timeouts: RequestTimeouts, started: bool, last_write: float, status: int, now: float, expired: bool
) -> None:
    ex = _exchange()
    ex.response_started = started
    ex.last_write = last_write
    ex.status = status
    assert timeouts.expired(ex, start=0.0, now=now) is expired
    assert timeouts.armed
    assert not RequestTimeouts().armed
