"""End-to-end faults under load (issue 13, requirement 4): in a real `sluice local`, SIGKILL a
user container, then one activator replica, then every activator, while a per-request client
sends a steady load. Only the requests in flight at each kill may fail, and none with a refused
dial: those never reached an app and are sent elsewhere (the activator picks another pod, the
ingress another activator replica, or holds the request until a restarted activator takes it)."""

from __future__ import annotations

import asyncio
import json

from .conftest import Local
from .faultload import DOMAIN, FAULT_ANNOTATIONS, LoadResult, paced_load, pid_of, service_manifest, sigkill

RATE = 100.0
SECONDS = 8.0
HOST = f"faults.default.{DOMAIN}"
# Requests in flight when a process dies are lost (their bytes may have reached the app, so
# they are never sent again). At 100 req/s of 5 ms requests about one is in flight at each
# hop; the bound leaves room for a loaded machine.
IN_FLIGHT_BOUND = 12


def assert_only_in_flight_lost(result: LoadResult, expected: int) -> None:
    print(result.summary())
    assert result.total == expected
    refused = [e for e in result.errors if "refused" in e]
    assert refused == [], refused[:5]
    assert result.failed <= IN_FLIGHT_BOUND, result.errors


async def test_sigkill_of_a_pod_and_of_activators_costs_only_in_flight_requests(local: Local) -> None:
    local.apply(service_manifest("faults", FAULT_ANNOTATIONS))
    local.wait_for("two ready pods", lambda: local.ready_pods("faults") >= 2, 90)
    local.wait_for("the service ready", lambda: (svc := local.service("faults")) and svc["ready"] == "True", 90)
    await asyncio.sleep(2.0)  # the activators have probed both pods
    state = json.loads((local.home / "state.json").read_text())
    assert len(state["activators"]) == 2  # replicas behind the activator Service
    pod = local.pods("faults")[0]["name"]
    # A pod's app, then one activator replica: the other replica takes the refused requests.
    result = await paced_load(
        f"{local.url}/?sleep=5",
        HOST,
        RATE,
        SECONDS,
        [
            (2.0, "user-container", sigkill(pid_of(local.home, f"{pod}/user-container"))),
            (4.5, "activator", sigkill(pid_of(local.home, "activator"))),
        ],
    )
    assert_only_in_flight_lost(result, int(RATE * SECONDS))
    assert set(result.kills) == {"user-container", "activator"}
    # Every activator at once: the ingress holds the requests until one is back.
    local.wait_for("both activator processes", lambda: _activators_running(local), 60)
    kills = [sigkill(pid_of(local.home, name)) for name in ("activator", "activator-1")]

    def kill_both() -> None:
        for kill in kills:
            kill()

    result = await paced_load(f"{local.url}/?sleep=5", HOST, 50.0, 6.0, [(1.0, "activators", kill_both)])
    assert_only_in_flight_lost(result, 300)
    after = await paced_load(f"{local.url}/", HOST, 20.0, 0.5, [])
    assert after.failed == 0, after.errors


def _activators_running(local: Local) -> bool:
    names = {str(p["name"]) for p in json.loads((local.home / "state.json").read_text()).get("processes") or ()}
    return {"activator", "activator-1"} <= names
