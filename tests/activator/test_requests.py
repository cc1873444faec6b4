"""The activator over real sockets, against the embedded Kubernetes API: probes (§1.3),
revision identification (§3.3), backends and probing (§3.4), holding and releasing
(§3.6), proxying rules (§3.7)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support import RawConnection, get, http_request

from .conftest import Autoscaler, FakeQueueProxy, Kube, MakeActivator, eventually

REV = "hello-00001"
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}


def echoed_headers(body: bytes) -> dict[str, str]:
    record: dict[str, Any] = json.loads(body)
    return {k.lower(): v for k, v in record["headers"]}


async def test_probe_matrix(make_activator: MakeActivator) -> None:
    act = await make_activator()
    port = act.port
    r = await http_request(port, get("/", {"User-Agent": "kube-probe/1.30"}))
    assert (r.status, r.body) == (200, b"")
    r = await http_request(port, get("/", {"K-Kubelet-Probe": "1"}))
    assert r.status == 200
    r = await http_request(port, get("/healthz", {"K-Network-Probe": "activator"}))
    assert (r.status, r.body) == (200, b"activator")
    r = await http_request(port, get("/", {"K-Network-Probe": "probe", "K-Network-Hash": "abc"}))
    assert (r.status, r.header("K-Network-Hash"), r.body) == (200, "abc", b"")
    r = await http_request(port, get("/", {"K-Network-Probe": "probe"}))
    assert r.status == 400
    assert r.body == b'a probe request must contain a non-empty "K-Network-Hash" header\n'
    r = await http_request(port, get("/", {"K-Network-Probe": "queue<'x'>"}))
    assert r.status == 400
    assert r.body == b'unexpected probe header value: "queue&lt;&#39;x&#39;&gt;"\n'
    assert r.header("X-Content-Type-Options") == "nosniff"
    # Same handler on the h2c port (§3.2).
    r = await http_request(act.h2c_port, get("/", {"K-Network-Probe": "activator"}))
    assert (r.status, r.body) == (200, b"activator")


async def test_health_follows_the_autoscaler_connection(make_activator: MakeActivator, autoscaler: Autoscaler) -> None:
    act = await make_activator()
    await autoscaler.server.shutdown(budget=1.0)
    await eventually(lambda: not act.reporter.connected)
    r = await http_request(act.port, get("/", {"User-Agent": "kube-probe/1.30"}))
    assert r.status == 500
    assert r.body == b"connection has not yet been established\n"
    # Back up on a new server at the same port: the reporter reconnects by itself.
    await autoscaler.server.start("127.0.0.1", autoscaler.server.port)
    await asyncio.wait_for(act.reporter.connected_event.wait(), 5)
    r = await http_request(act.port, get("/", {"User-Agent": "kube-probe/1.30"}))
    assert r.status == 200
    act.health.terminating = True
    r = await http_request(act.port, get("/", {"User-Agent": "kube-probe/1.30"}))
    assert (r.status, r.body) == (500, b"received SIGTERM from kubelet\n")


async def test_unknown_revision_is_404(make_activator: MakeActivator) -> None:
    act = await make_activator()
    r = await http_request(act.port, get("/", {"Knative-Serving-Revision": "nope", "Knative-Serving-Namespace": "x"}))
    assert r.status == 404
    assert r.body == b'Error getting active endpoint: revision.serving.knative.dev "nope" not found\n'
    r = await http_request(act.port, get("/"))
    assert r.status == 404


async def test_warm_path_forwards_with_contract_headers(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    qp: FakeQueueProxy = await make_qp("127.0.0.2")
    await kube.create_revision(REV, cc=0)
    await kube.set_private(REV, [qp.dest])
    act = await make_activator()
    await eventually(lambda: act.revisions.get(("default", REV)) is not None)
    await eventually(lambda: act.revisions.entries[("default", REV)].throttler.capacity > 0)
    headers = dict(ROUTED)
    headers.update({"X-Forwarded-For": "10.0.0.1", "K-Network-Hash": "h", "K-Proxy-Request": "other"})
    r = await http_request(act.port, get("/path?q=1", headers, host="hello.example.com"))
    assert r.status == 200, r.body
    seen = echoed_headers(r.body)
    assert json.loads(r.body)["url"] == "/path?q=1"
    assert seen["k-proxy-request"] == "activator"
    assert seen["k-original-host"] == "hello.example.com"
    assert seen["host"] == f"127.0.0.2:{qp.port}"
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    for gone in ("knative-serving-revision", "knative-serving-namespace", "k-network-hash"):
        assert gone not in seen
    # An existing K-Original-Host is kept as it is (§3.7).
    headers["K-Original-Host"] = "first.example.com"
    r = await http_request(act.port, get("/", headers, host="second.example.com"))
    assert echoed_headers(r.body)["k-original-host"] == "first.example.com"


async def test_host_fallback_identifies_the_revision(kube: Kube, make_activator: MakeActivator, make_qp: Any) -> None:
    qp = await make_qp("127.0.0.3")
    await kube.create_revision(REV, cc=0)
    await kube.set_private(REV, [qp.dest])
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(("default", REV))) is not None and e.throttler.capacity > 0)
    r = await http_request(act.port, get("/", host=f"{REV}.default.svc.cluster.local:80"))
    assert r.status == 200
    r = await http_request(act.port, get("/", host=f"{REV}.default.svc.other.domain"))
    assert r.status == 404


async def test_cold_start_holds_then_releases_in_order(
    kube: Kube, make_activator: MakeActivator, make_qp: Any, autoscaler: Autoscaler
) -> None:
    await kube.create_revision(REV, cc=0)
    act = await make_activator()
    await eventually(lambda: act.revisions.get(("default", REV)) is not None)
    conns = [await RawConnection.open(act.port) for _ in range(3)]
    for i, conn in enumerate(conns):
        await conn.send(get(f"/{i}", ROUTED))
        await eventually(lambda i=i: act.revisions.entries[("default", REV)].throttler.live_waiting == i + 1)  # type: ignore[misc]
    # The immediate first-request stat (§3.8) reached the autoscaler.
    await eventually(lambda: bool(autoscaler.received.for_key(f"default/{REV}")))
    first = autoscaler.received.for_key(f"default/{REV}")[0]
    assert (first.pod_name, first.average_concurrent_requests, first.request_count) == ("activator-abc", 1.0, 1.0)
    # A pod appears, not ready yet: the activator probes it and keeps holding.
    qp: FakeQueueProxy = await make_qp("127.0.0.4", ready=False)
    await kube.set_private(REV, [], [qp.dest])
    await eventually(lambda: qp.probes >= 2)
    assert not qp.requests
    qp.ready = True  # probe optimisation: healthy on probe success, before Kubernetes says ready
    responses = [await c.read_responses(1, timeout=5) for c in conns]
    assert [r[0].status for r in responses] == [200, 200, 200]
    assert [json.loads(r[0].body)["url"] for r in responses] == ["/0", "/1", "/2"]
    for c in conns:
        await c.close()


async def test_upgrade_is_tunnelled_through_the_activator(kube: Kube, make_activator: MakeActivator) -> None:
    from tests.support import raw_upstream, read_request_head

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _line, headers, _ = await read_request_head(reader)
            if headers.get("user-agent", "").startswith("Knative-Activator-Probe"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nqueue")
                await writer.drain()
                continue
            assert headers.get("upgrade") == "websocket" and headers["k-proxy-request"] == "activator"
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            await writer.drain()
            while data := await reader.read(1024):
                writer.write(data.upper())
                await writer.drain()
            return

    async with raw_upstream(pod) as port:
        await kube.create_revision(REV, cc=1)
        await kube.set_private(REV, [("127.0.0.1", port)])
        act = await make_activator()
        await eventually(lambda: (e := act.revisions.get(("default", REV))) is not None and e.throttler.capacity == 1)
        conn = await RawConnection.open(act.port)
        headers = dict(ROUTED, Connection="Upgrade", Upgrade="websocket")
        await conn.send(get("/ws", headers))
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        await conn.send(b"hello")
        assert await conn.reader.readexactly(5) == b"HELLO"
        # The tunnel holds the pod's only slot (cc=1) for its lifetime (§2.6).
        assert act.revisions.entries[("default", REV)].throttler.in_flight == 1
        await conn.close()
        await eventually(lambda: act.revisions.entries[("default", REV)].throttler.in_flight == 0)
