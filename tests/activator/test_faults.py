"""Capacity, faults and timeouts over real sockets (CONTRACT.md §3.4–§3.6, issue 5
"Bad input and faults")."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import RawConnection, get, http_request

from .conftest import FakeQueueProxy, Kube, MakeActivator, eventually

REV = "hello-00001"
KEY = ("default", REV)
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}


async def _open_requests(port: int, n: int, path: str = "/") -> list[RawConnection]:
    conns = []
    for _ in range(n):
        conn = await RawConnection.open(port)
        await conn.send(get(path, ROUTED))
        conns.append(conn)
    return conns


async def _close(conns: list[RawConnection]) -> None:
    for c in conns:
        await c.close()


async def test_cc_is_never_exceeded_and_a_new_pod_takes_queued_requests_at_once(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    a: FakeQueueProxy = await make_qp("127.0.0.2")
    a.hold = True
    await kube.create_revision(REV, cc=2)
    await kube.set_private(REV, [a.dest])
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity == 2)
    conns = await _open_requests(act.port, 5)
    await eventually(lambda: len(a.held) == 2 and act.revisions.entries[KEY].throttler.live_waiting == 3)
    await asyncio.sleep(0.1)
    assert a.max_concurrent == 2  # cc per pod
    # A second pod becomes healthy: the queued requests go to it now, not behind the busy one.
    b: FakeQueueProxy = await make_qp("127.0.0.3")
    b.hold = True
    await kube.set_private(REV, [a.dest, b.dest])
    await eventually(lambda: len(b.held) == 2)
    assert act.revisions.entries[KEY].throttler.live_waiting == 1
    assert a.max_concurrent == 2 and b.max_concurrent == 2
    a.release_all()
    await eventually(lambda: len(a.held) == 1)  # the last queued one, never above cc
    a.release_all()
    b.release_all()
    statuses = [(await c.read_responses(1))[0].status for c in conns]
    assert statuses == [200] * 5
    await _close(conns)


async def test_pod_dying_mid_request_gets_502_and_leaves_rotation(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    a: FakeQueueProxy = await make_qp("127.0.0.4")
    b: FakeQueueProxy = await make_qp("127.0.0.5")
    a.hold = True
    await kube.create_revision(REV, cc=1)
    await kube.set_private(REV, [a.dest, b.dest])
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity == 2)
    # cc 1-3 is first-available in sorted order: 127.0.0.4 gets the first request.
    [victim] = await _open_requests(act.port, 1)
    await eventually(lambda: len(a.held) == 1)
    await a.kill()
    [resp] = await victim.read_responses(1)
    assert resp.status == 502
    assert resp.header("Content-Type") == "text/plain; charset=utf-8"
    throttler = act.revisions.entries[KEY].throttler
    assert [t.dest for t in throttler.assigned] == [f"127.0.0.5:{b.port}"]
    # Only that request failed: the next ones go to the live pod.
    for _ in range(3):
        r = await http_request(act.port, get("/", ROUTED))
        assert r.status == 200
    assert len(b.requests) == 3
    await victim.close()


async def test_revision_timeout_answers_held_requests(kube: Kube, make_activator: MakeActivator) -> None:
    await kube.create_revision(REV, cc=0, timeout=1)
    act = await make_activator()
    await eventually(lambda: act.revisions.get(KEY) is not None)
    r = await http_request(act.port, get("/", ROUTED), timeout=5)
    assert (r.status, r.body) == (504, b"activator request timeout")
    assert act.revisions.entries[KEY].throttler.live_waiting == 0


async def test_no_ready_addresses_and_flapping_endpoints_never_drop_a_request(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    qp: FakeQueueProxy = await make_qp("127.0.0.6", ready=False)
    await kube.create_revision(REV, cc=1, timeout=3)
    await kube.set_private(REV, [], [qp.dest])  # only not-ready addresses
    act = await make_activator()
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conns = await _open_requests(act.port, 4)
    for _ in range(4):  # flap: gone, back, gone, back (still not ready)
        await kube.set_private(REV, [])
        await asyncio.sleep(0.05)
        await kube.set_private(REV, [], [qp.dest])
        await asyncio.sleep(0.05)
    assert not qp.requests
    qp.ready = True
    statuses = [(await c.read_responses(1, timeout=5))[0].status for c in conns]
    assert statuses == [200] * 4
    await _close(conns)


async def test_revision_deleted_while_requests_wait(kube: Kube, make_activator: MakeActivator) -> None:
    await kube.create_revision(REV, cc=0)
    act = await make_activator()
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conns = await _open_requests(act.port, 3)
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 3)
    await kube.delete_revision(REV)
    responses = [(await c.read_responses(1, timeout=5))[0] for c in conns]
    assert [(r.status, r.body) for r in responses] == [(500, b"")] * 3  # §3.6: revision vanished
    r = await http_request(act.port, get("/", ROUTED))
    assert r.status == 404
    await _close(conns)


async def test_client_gone_while_waiting_frees_its_place(kube: Kube, make_activator: MakeActivator) -> None:
    await kube.create_revision(REV, cc=0)
    act = await make_activator()
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conns = await _open_requests(act.port, 3)
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 3)
    await _close(conns)
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 0 and act.handler.in_flight == 0)


async def test_requests_beyond_the_queue_depth_wait(kube: Kube, make_activator: MakeActivator) -> None:
    # Go's revision breaker admits queue depth + revisionMaxConcurrency (2**31 - 1) requests
    # (§3.5): more than SLUICE_QUEUE_DEPTH requests wait for capacity instead of a 503.
    await kube.create_revision(REV, cc=1)
    act = await make_activator(SLUICE_QUEUE_DEPTH="2")
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conns = await _open_requests(act.port, 4)
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 4)
    await _close(conns)
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 0)


async def test_requests_keep_flowing_while_the_autoscaler_is_away(
    kube: Kube, make_activator: MakeActivator, make_qp: Any, autoscaler: Any
) -> None:
    qp = await make_qp("127.0.0.7")
    await kube.create_revision(REV, cc=0)
    await kube.set_private(REV, [qp.dest])
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity > 0)
    await autoscaler.server.shutdown(budget=1.0)
    await eventually(lambda: not act.reporter.connected)
    for _ in range(3):
        r = await http_request(act.port, get("/", ROUTED))
        assert r.status == 200
