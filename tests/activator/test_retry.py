"""Requests that never reached an app go to another pod (issue 13, requirement 4), and never
one whose bytes may have: a real activator, a real `python -m proxy` whose app is gone (its
dial is refused: it answers 502 marked X-Sluice-Not-Sent), a pod whose queue-proxy is gone,
and a live pod. Mesh mode `disabled`, as in `sluice local`: Endpoints readiness is trusted
without probing, so only the activator's own quarantine keeps a failed pod out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from activator.__main__ import ActivatorProcess
from tests.support import QueueProxySubprocess, Response, free_port, get, http_request

from .conftest import FakeQueueProxy, Kube, MakeActivator, eventually

REV = "hello-00001"
KEY = ("default", REV)
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}


async def upload(port: int, body: bytes) -> Response:
    """POST /upload with `body` through the activator."""
    head = f"POST /upload HTTP/1.1\r\nHost: hello.default.example.com\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in ROUTED.items())
    return await http_request(port, head.encode() + b"\r\n" + body)


@asynccontextmanager
async def pod_without_app() -> AsyncIterator[QueueProxySubprocess]:
    """A real queue-proxy on 127.0.0.1 whose user container was SIGKILLed: nothing listens
    on its user port, and its readiness probe (TCP to that port) fails."""
    dead_app_port = free_port()
    probe = json.dumps({"tcpSocket": {"host": "127.0.0.1", "port": dead_app_port}})
    qp = QueueProxySubprocess(dead_app_port, SERVING_READINESS_PROBE=probe, SLUICE_DRAIN_QUIET_PERIOD="0").start()
    try:
        yield qp
    finally:
        qp.terminate()
        await asyncio.to_thread(qp.wait, 20)


async def start_with_two_pods(
    kube: Kube, make_activator: MakeActivator, broken: tuple[str, int], live: FakeQueueProxy
) -> ActivatorProcess:
    await kube.create_revision(REV, cc=1)
    # Kubernetes still lists both pods as ready (it has not noticed the crash yet). cc 1-3 is
    # first-available in sorted order: the broken pod (127.0.0.1 / .8) is tried first.
    await kube.set_private(REV, [broken, live.dest])
    act = await make_activator(SLUICE_MESH_COMPATIBILITY_MODE="disabled")
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity == 2)
    return act


async def test_a_pod_whose_app_is_gone_costs_no_request_without_a_body(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    live: FakeQueueProxy = await make_qp("127.0.0.7")
    async with pod_without_app() as broken:
        act = await start_with_two_pods(kube, make_activator, ("127.0.0.1", broken.port), live)
        statuses = [(await http_request(act.port, get(f"/{i}", ROUTED))).status for i in range(10)]
        assert statuses == [200] * 10
        assert [r["url"] for r in live.requests] == [f"/{i}" for i in range(10)]
        # Out of the rotation, and its failing probes keep it out.
        assert f"127.0.0.1:{broken.port}" in act.backends.watchers[KEY].quarantined
        await asyncio.sleep(0.5)
        assert [t.dest for t in act.revisions.entries[KEY].throttler.assigned] == [f"127.0.0.7:{live.port}"]


async def test_a_request_body_streamed_to_a_failed_pod_is_not_replayed(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    live: FakeQueueProxy = await make_qp("127.0.0.7")
    async with pod_without_app() as broken:
        act = await start_with_two_pods(kube, make_activator, ("127.0.0.1", broken.port), live)
        resp = await upload(act.port, b"x" * 1000)
        # The body went to the broken pod's queue-proxy: consumed, so its 502 is relayed.
        assert resp.status == 502
        assert resp.header("X-Sluice-Not-Sent") == "true"
        assert b"connection refused" in resp.body
        assert live.requests == []
        # The pod left the rotation all the same: the next upload goes to the live pod.
        assert f"127.0.0.1:{broken.port}" in act.backends.watchers[KEY].quarantined
        assert (await upload(act.port, b"x" * 1000)).status == 200


async def test_a_refused_dial_goes_to_another_pod(kube: Kube, make_activator: MakeActivator, make_qp: Any) -> None:
    gone_port = free_port()  # the pod's queue-proxy is gone: the activator's own dial is refused
    live: FakeQueueProxy = await make_qp("127.0.0.9")
    await kube.create_revision(REV, cc=1)
    await kube.set_private(REV, [("127.0.0.8", gone_port), live.dest])
    act = await make_activator(SLUICE_MESH_COMPATIBILITY_MODE="disabled")
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity == 2)
    # A body too: the dial failed before any byte was written, so nothing was consumed.
    resp = await upload(act.port, b"y" * 5000)
    assert resp.status == 200
    record = json.loads(resp.body)
    assert record["method"] == "POST"
    assert f"127.0.0.8:{gone_port}" in act.backends.watchers[KEY].quarantined
    statuses = [(await http_request(act.port, get("/", ROUTED))).status for _ in range(5)]
    assert statuses == [200] * 5
