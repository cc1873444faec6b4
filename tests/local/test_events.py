"""The event recorder against the embedded API: client-go's de-duplication (one Event per
object/type/reason/message/source, `count` and `lastTimestamp` moving on repeats) and the
transition-only recording the level-triggered controller relies on."""

from __future__ import annotations

from typing import Any

from sluice.local.controller.events import EVENTS, EventRecorder
from sluice.local.kube import Kube

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
}


async def events_of(kube: Kube) -> list[dict[str, Any]]:
    got = await kube.list(EVENTS, "default")
    return sorted(got, key=lambda e: e["metadata"]["name"])


async def test_repeats_are_counted_on_one_event(api: Any) -> None:
    kube = Kube(api)
    rec = EventRecorder(kube, "kubelet")
    for _ in range(3):
        await rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container c", "spec.containers{c}")
    await rec.event(POD, "Normal", "Started", "Started container c", "spec.containers{c}")
    evs = await events_of(kube)
    assert len(evs) == 2
    backoff = next(e for e in evs if e["reason"] == "BackOff")
    assert backoff["count"] == 3 and backoff["type"] == "Warning"
    assert backoff["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "namespace": "default",
        "uid": "u-1",
        "resourceVersion": "7",
        "fieldPath": "spec.containers{c}",
    }
    assert backoff["source"] == {"component": "kubelet", "host": "sluice-local"}
    assert backoff["metadata"]["name"].startswith("p.")
    assert backoff["firstTimestamp"] <= backoff["lastTimestamp"]


async def test_on_change_records_transitions_only(api: Any) -> None:
    kube = Kube(api)
    rec = EventRecorder(kube, "controller")
    states: list[str] = ["Unknown", "Unknown", "False", "False", "True", "False"]
    for state in states:
        reason = "ExitCode1" if state == "False" else ""
        await rec.on_change(POD, "ready", (state,), "Warning", reason, "Container failed")
    (ev,) = await events_of(kube)
    # Two transitions into False: one Event, counted twice.
    assert (ev["reason"], ev["count"]) == ("ExitCode1", 2)
