"""Stats to the autoscaler (§3.8), ClusterIP fallback (§3.4), activator slicing from the
public Endpoints (§3.5), metrics (§3.10), a real queue-proxy in the path, and the
`python -m activator` process with its SIGTERM drain (§3.9)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from activator.config import ObservabilityConfig
from sluice.telemetry.config import ExportSettings
from tests.support import (
    ROOT,
    QueueProxySubprocess,
    RawConnection,
    free_port,
    get,
    http_request,
    raw_upstream,
    read_request_head,
)
from tests.telemetry.prom import scrape

from .conftest import Autoscaler, FakeQueueProxy, Kube, MakeActivator, activator_env, eventually, public_endpoints_body

REV = "hello-00001"
KEY = ("default", REV)
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}


async def test_stats_reach_the_autoscaler_every_second(
    kube: Kube, make_activator: MakeActivator, autoscaler: Autoscaler
) -> None:
    await kube.create_revision(REV, cc=0)
    act = await make_activator()
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conns = []
    for _ in range(2):
        conn = await RawConnection.open(act.port)
        await conn.send(get("/", ROUTED))
        conns.append(conn)
    key = f"default/{REV}"
    await eventually(lambda: len(autoscaler.received.for_key(key)) >= 3, timeout=4)
    stats = autoscaler.received.for_key(key)
    assert (stats[0].average_concurrent_requests, stats[0].request_count) == (1.0, 1.0)  # immediate
    assert all(s.pod_name == "activator-abc" and s.timestamp == 0 for s in stats)  # §3.8: left 0
    # Held requests count as concurrency (§3.8: time queued counts); the first periodic
    # report subtracts the immediate one.
    assert stats[1].request_count == 1.0
    assert stats[2].average_concurrent_requests > 1.9 and stats[2].request_count == 0.0
    times = [t for t, k, _ in autoscaler.received.stats if k == key]
    assert 0.8 < times[2] - times[1] < 1.2
    for c in conns:
        await c.close()


async def test_cluster_ip_fallback_when_pods_are_not_addressable(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    behind_cluster_ip: FakeQueueProxy = await make_qp("127.0.0.9")
    await kube.create_revision(REV, cc=10)
    await kube.core.create_namespaced_service(
        "default",
        {
            "metadata": {
                "name": f"{REV}-private",
                "labels": {
                    "serving.knative.dev/revision": REV,
                    "networking.internal.knative.dev/serviceType": "Private",
                },
            },
            "spec": {"clusterIP": "127.0.0.9", "ports": [{"name": "http", "port": behind_cluster_ip.port}]},
        },
    )
    # The pod IP answers nothing (as behind a mesh): probes fail "mesh-like".
    await kube.set_private(REV, [("127.0.0.8", free_port())])
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.cluster_ip is not None)
    entry = act.revisions.entries[KEY]
    assert entry.throttler.cluster_ip is not None
    assert entry.throttler.cluster_ip.dest == f"127.0.0.9:{behind_cluster_ip.port}"
    assert entry.throttler.capacity == 10  # cc x 1 ready / 1 activator
    r = await http_request(act.port, get("/", ROUTED))
    assert r.status == 200
    assert len(behind_cluster_ip.requests) == 1


async def test_public_endpoints_slice_the_pods_between_activators(
    kube: Kube, make_activator: MakeActivator, make_qp: Any
) -> None:
    qps = [await make_qp(f"127.0.0.{20 + i}") for i in range(4)]
    await kube.create_revision(REV, cc=1)
    await kube.set_private(REV, [q.dest for q in qps])
    # Two activators in the path; "127.0.0.1" sorts before "127.0.0.50": this one is index 0.
    await kube.put_endpoints(public_endpoints_body(REV, ["127.0.0.50", "127.0.0.1"]))
    act = await make_activator()
    await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.num_activators == 2)
    await eventually(lambda: act.revisions.entries[KEY].throttler.capacity == 2)
    throttler = act.revisions.entries[KEY].throttler
    assert throttler.activator_index == 0
    assert [t.dest for t in throttler.assigned] == [f"127.0.0.{20 + i}:{qps[i].port}" for i in range(2)]


async def test_metrics_when_prometheus_is_configured(kube: Kube, make_activator: MakeActivator) -> None:
    await kube.create_revision(REV, cc=0)
    metrics_port = free_port()
    act = await make_activator(
        observability=ObservabilityConfig(ExportSettings("prometheus", f"127.0.0.1:{metrics_port}"))
    )
    await eventually(lambda: act.revisions.get(KEY) is not None)
    conn = await RawConnection.open(act.port)
    await conn.send(get("/", ROUTED))
    await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 1)
    assert act.metrics_port == metrics_port
    prom = await scrape(metrics_port)
    labels = {"k8s_namespace_name": "default", "kn_configuration_name": "hello", "kn_service_name": "hello"}
    assert prom.values("kn_revision_request_queued", kn_revision_name=REV, **labels) == [1]
    assert prom.values("kn_activator_stats_conn_reachable") == [1]
    assert (await http_request(act.metrics_port, get("/other"))).status == 404
    await conn.close()


async def test_through_a_real_queue_proxy(kube: Kube, make_activator: MakeActivator) -> None:
    seen: list[dict[str, str]] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _line, headers, _ = await read_request_head(reader)
            seen.append(headers)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    async with raw_upstream(app) as user_port:
        qp = QueueProxySubprocess(user_port).start()
        try:
            await kube.create_revision(REV, cc=0)
            await kube.set_private(REV, [], [("127.0.0.1", qp.port)])  # not ready yet for Kubernetes
            act = await make_activator()
            # The real QP answers the activator probe 200 `queue`: probe optimisation makes it healthy.
            await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity > 0)
            r = await http_request(act.port, get("/x", ROUTED, host="hello.default.example.com"))
            assert (r.status, r.body) == (200, b"hello")
            assert seen[-1]["host"] == "hello.default.example.com"  # QP restored K-Original-Host
            assert seen[-1]["k-proxy-request"] == "activator"
            assert "knative-serving-revision" not in seen[-1]
        finally:
            qp.stop()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("activator exited: " + (proc.stderr.read().decode() if proc.stderr else ""))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("activator did not listen")


async def test_process_drains_on_sigterm(kube: Kube, autoscaler: Autoscaler) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(
        activator_env(
            kube,
            autoscaler.url,
            SLUICE_HTTP1_PORT=str(port),
            SLUICE_H2C_PORT=str(free_port()),
            SLUICE_DRAIN_SLEEP="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "activator"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        await asyncio.to_thread(_wait_port, port, proc)
        probe = get("/", {"User-Agent": "kube-probe/1.30"})
        await eventually(lambda: autoscaler.server.client_count == 1, timeout=10)
        assert (await http_request(port, probe)).status == 200
        proc.send_signal(signal.SIGTERM)
        # Failing health as soon as the signal is handled, still serving during the drain sleep (§3.9).
        deadline = time.monotonic() + 1.0
        while (r := await http_request(port, probe)).status == 200 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert (r.status, r.body) == (500, b"received SIGTERM from kubelet\n")
        r = await http_request(port, get("/", {"K-Network-Probe": "activator"}))
        assert r.status == 200
        code = await asyncio.to_thread(proc.wait, 10)
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=5)
    assert b'"severity":"ERROR"' not in err, err.decode()[-2000:]
