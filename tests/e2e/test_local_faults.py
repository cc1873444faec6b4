"""End-to-end faults under load (issue 13, requirement 4): in a real `sluice local`, SIGKILL a
user container and then the activator while a per-request client sends a steady load; only the
requests in flight at each kill may fail, and none with a refused dial (those never reached an
app and are sent elsewhere: the activator picks another pod, the ingress holds the request
until the restarted activator takes it)."""

from __future__ import annotations

import asyncio
import time

from .conftest import Local
from .faultload import DOMAIN, FAULT_ANNOTATIONS, paced_load, pid_of, service_manifest, sigkill

RATE = 100.0
SECONDS = 8.0
# Requests in flight when a process dies are lost (their bytes may have reached the app, so
# they are never sent again). At 100 req/s of 5 ms requests about one is in flight at each
# hop; the bound leaves room for a loaded machine.
IN_FLIGHT_BOUND = 12


async def test_sigkill_of_a_pod_and_of_the_activator_costs_only_in_flight_requests(local: Local) -> None:
    local.apply(service_manifest("faults", FAULT_ANNOTATIONS))
    local.wait_for("two ready pods", lambda: local.ready_pods("faults") >= 2, 90)
    local.wait_for("the service ready", lambda: (svc := local.service("faults")) and svc["ready"] == "True", 90)
    await asyncio.sleep(2.0)  # the activator has probed both pods
    pod = local.pods("faults")[0]["name"]
    user_pid = pid_of(local.home, f"{pod}/user-container")
    activator_pid = pid_of(local.home, "activator")
    started = time.monotonic()
    result = await paced_load(
        f"{local.url}/?sleep=5",
        f"faults.default.{DOMAIN}",
        RATE,
        SECONDS,
        [(2.0, "user-container", sigkill(user_pid)), (4.5, "activator", sigkill(activator_pid))],
    )
    print(result.summary())
    assert result.total == int(RATE * SECONDS)
    assert set(result.kills) == {"user-container", "activator"}
    refused = [e for e in result.errors if "refused" in e]
    assert refused == [], refused[:5]
    assert result.failed <= IN_FLIGHT_BOUND, result.errors
    # The activator restarted and serves again: a request after the run goes through it.
    assert time.monotonic() - started < 60
    after = await paced_load(f"{local.url}/", f"faults.default.{DOMAIN}", 20.0, 0.5, [])
    assert after.failed == 0, after.errors
