"""The KPA path end to end against the embedded Kubernetes API over real sockets (CONTRACT.md
§4.2-§4.4, §4.8, §4.9): objects written, scale from zero on the first activator stat, panic,
scale to zero after the grace period, min/max bounds, faults.

Windows are shortened with the revision annotations (6 s stable window, the minimum) and
`config-autoscaler` (1 s grace), so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from autoscaler.config import CONFIG_NAME
from sluice.wire import Stat, WireStatMessage, encode_wire_stat_messages

from ..support import QueueProxySubprocess, get, http_request, raw_upstream, read_request_head
from .kpa_fixtures import NS, Cluster, cluster, until

__all__ = ["cluster"]

FAST = {"autoscaling.knative.dev/window": "6s"}


def conds(obj: dict[str, Any] | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def reasons(obj: dict[str, Any] | None) -> dict[str, str]:
    return {c["type"]: c.get("reason", "") for c in ((obj or {}).get("status") or {}).get("conditions") or []}


async def send_activator_stat(port: int, name: str, concurrency: float) -> None:
    """What an activator sends on its websocket (§3.8): one binary WireStatMessages frame."""
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/") as ws:
        stat = Stat(pod_name="activator-x", average_concurrent_requests=concurrency, request_count=concurrency)
        await ws.send_bytes(encode_wire_stat_messages([WireStatMessage(NS, name, stat)]))
        await asyncio.sleep(0.1)


async def test_objects_written_with_contract_shapes(cluster: Cluster) -> None:
    await cluster.start_autoscaler()
    pa = await cluster.create_revision("shapes", annotations=FAST)
    uid = pa["metadata"]["uid"]

    async def sks_and_metric() -> bool:
        return await cluster.sks("shapes") is not None and await cluster.metric("shapes") is not None

    await until(sks_and_metric, what="SKS and Metric")
    sks = await cluster.sks("shapes")
    metric = await cluster.metric("shapes")
    assert sks is not None and metric is not None
    owner = {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "name": "shapes",
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert sks["metadata"]["ownerReferences"] == [owner]
    assert metric["metadata"]["ownerReferences"] == [owner]
    # SKS: PA labels, only the metric annotation; spec from the PA (§4.2).
    assert sks["metadata"]["labels"]["serving.knative.dev/revision"] == "shapes"
    assert sks["metadata"]["annotations"] == {"autoscaling.knative.dev/metric": "concurrency"}
    assert sks["spec"]["objectRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shapes-deployment"}
    assert sks["spec"]["protocolType"] == "http1"
    # Defaults (TBC 211, cc 0): EBC starts at 100 - 211 < 0, so the revision starts behind the activator.
    assert sks["spec"]["mode"] == "Proxy"
    assert sks["spec"]["numActivators"] == 3  # ceil((0 x 100 + 211) / 100)
    # Metric: all annotations, windows as integer nanoseconds, scrape target = private service.
    assert metric["metadata"]["annotations"]["autoscaling.knative.dev/window"] == "6s"
    assert metric["spec"] == {
        "stableWindow": 6_000_000_000,
        "panicWindow": 1_000_000_000,
        "scrapeTarget": "shapes-private",
    }

    async def pa_status_complete() -> bool:
        st = (await cluster.pa("shapes")).get("status") or {}
        return st.get("serviceName") == "shapes" and conds(await cluster.pa("shapes")).get("SKSReady") == "True"

    await until(pa_status_complete, what="PA status")
    pa = await cluster.pa("shapes")
    st = pa["status"]
    assert st["metricsServiceName"] == "shapes-private"
    assert st["observedGeneration"] == pa["metadata"]["generation"]
    assert st["actualScale"] == 0
    assert st["desiredScale"] == -1  # no decision yet
    # Activating (1 pod expected, none ready): Active Unknown/Queued, Ready Unknown.
    assert conds(pa) == {
        "Active": "Unknown",
        "Ready": "Unknown",
        "SKSReady": "True",
        "ScaleTargetInitialized": "Unknown",
    }
    assert reasons(pa)["Active"] == "Queued"

    async def metric_ready() -> bool:
        return conds(await cluster.metric("shapes")).get("Ready") == "True"

    await until(metric_ready, what="Metric Ready")

    # A pod turns ready: ScaleTargetInitialized and Active become True, and so does Ready.
    await cluster.add_pod("shapes", 0)

    async def active() -> bool:
        return conds(await cluster.pa("shapes")) == {
            "Active": "True",
            "Ready": "True",
            "SKSReady": "True",
            "ScaleTargetInitialized": "True",
        }

    await until(active, what="PA Ready")
    assert (await cluster.pa("shapes"))["status"]["actualScale"] == 1


async def test_scale_from_zero_on_first_activator_stat(cluster: Cluster) -> None:
    await cluster.set_config(CONFIG_NAME, {"scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"})
    app = await cluster.start_autoscaler()
    # A revision created at zero (initial-scale 0): inactive from the start, no decision yet.
    zero = {**FAST, "autoscaling.knative.dev/initial-scale": "0"}
    await cluster.create_revision("cold", annotations=zero, replicas=0)

    async def inactive() -> bool:
        return conds(await cluster.pa("cold")).get("Active") == "False"

    await until(inactive, what="PA inactive")
    assert reasons(await cluster.pa("cold"))["Active"] == "NoTraffic"
    assert await cluster.replicas("cold") == 0
    sks = await cluster.sks("cold")
    assert sks is not None and sks["spec"]["mode"] == "Proxy"
    await send_activator_stat(app.stat_port, "cold", 1.0)

    async def scaled() -> bool:
        return await cluster.replicas("cold") == 1

    # Desired is still unknown (-1), so the next 2 s tick, not a poke, picks the stat up (§5).
    await until(scaled, timeout=4, what="scale 0 -> 1")
    pa = await cluster.pa("cold")
    assert pa["status"]["desiredScale"] == 1
    assert reasons(pa)["Active"] == "Queued"


async def _desired(app: Any, name: str, value: int) -> bool:
    decider = app.multiscaler.get(NS, name)
    return decider is not None and decider.status.desired_scale == value


async def test_burst_panics_and_scales_up_fast(cluster: Cluster) -> None:
    app = await cluster.start_autoscaler()
    # cc 10, target 70 % -> 7 per pod. Two idle pods. The panic window is 40 % of the 6 s window:
    # at the default 10 % (0.6 s) it is shorter than one 1 s bucket, so the panic average is 0
    # whenever the 2 s decider tick falls in a later second than the last 1 s scrape (Knative's
    # window arithmetic, §4.8) and the test passed or failed with the ticks' phase.
    burst = {**FAST, "autoscaling.knative.dev/panic-window-percentage": "40"}
    await cluster.create_revision("burst", annotations=burst, replicas=2, container_concurrency=10)
    pods = [await cluster.add_pod("burst", i) for i in range(2)]

    async def serving() -> bool:
        decider = app.multiscaler.get(NS, "burst")
        return (
            conds(await cluster.pa("burst")).get("Active") == "True"
            and decider is not None
            and 0 <= decider.status.desired_scale <= 2
        )

    await until(serving, timeout=8, what="steady state")
    for p in pods:
        p.concurrency = 40.0  # 80 in total: ceil(80 / 7) = 12 pods, 12/2 >= 2x -> panic

    async def scaled_up() -> bool:
        return await cluster.replicas("burst") >= 12

    await until(scaled_up, timeout=6, what="panic scale-up")
    scaler = app.multiscaler._runners[f"{NS}/burst"].scaler
    assert scaler.panicking, (scaler.gauges, scaler.last, app.multiscaler.get(NS, "burst"))
    pa = await cluster.pa("burst")
    assert pa["status"]["desiredScale"] == await cluster.replicas("burst")
    # Burst capacity is short: the activator goes back into the path.
    sks = await cluster.sks("burst")
    assert sks is not None and sks["spec"]["mode"] == "Proxy"
    # Load gone: panic mode holds the scale (never scales down while panicking, §4.7 step 7).
    for p in pods:
        p.concurrency = 0.0
    await asyncio.sleep(2.2)  # at least one more decider tick
    assert await cluster.replicas("burst") >= 12


async def test_idle_scales_to_zero_after_grace_with_activator_probe(cluster: Cluster) -> None:
    await cluster.set_config(CONFIG_NAME, {"scale-to-zero-grace-period": "1s"})
    app = await cluster.start_autoscaler()
    cluster.activator.in_path = False  # the public service still routes to pods at first
    await cluster.create_revision("idle", annotations={**FAST, "autoscaling.knative.dev/target-burst-capacity": "0"})
    await cluster.add_pod("idle", 0)

    async def active() -> bool:
        return conds(await cluster.pa("idle")).get("Active") == "True"

    await until(active, what="active")
    sks = await cluster.sks("idle")
    assert sks is not None and sks["spec"]["mode"] == "Serve"  # TBC 0: EBC 0 -> Serve

    async def inactive() -> bool:
        return conds(await cluster.pa("idle")).get("Active") == "False"

    # Idle for the 6 s stable window -> desired 0 -> PA inactive, SKS Proxy, still 1 replica.
    await until(inactive, timeout=14, what="inactive")
    assert await cluster.replicas("idle") == 1
    sks = await cluster.sks("idle")
    assert sks is not None and sks["spec"]["mode"] == "Proxy"
    # The activator is not in the path yet: no scale to zero while its probe fails.
    await asyncio.sleep(1.5)
    assert await cluster.replicas("idle") == 1
    assert cluster.activator.probes >= 1
    cluster.activator.in_path = True

    async def zero() -> bool:
        return await cluster.replicas("idle") == 0

    await until(zero, timeout=6, what="scale to zero")
    pa = await cluster.pa("idle")
    assert pa["status"]["desiredScale"] == 0
    assert reasons(pa)["Active"] == "NoTraffic"
    await cluster.remove_pod("idle-pod-0")

    # Back from zero: the decider sits at 0, so the first activator stat pokes it (§4.6) and
    # the scale is written without waiting for the 2 s tick.
    assert await _desired(app, "idle", 0)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await send_activator_stat(app.stat_port, "idle", 1.0)

    async def one() -> bool:
        return await cluster.replicas("idle") == 1

    await until(one, timeout=4, what="scale 0 -> 1")
    assert loop.time() - sent < 1.5


async def test_min_and_max_scale_respected(cluster: Cluster) -> None:
    app = await cluster.start_autoscaler()
    await cluster.create_revision(
        "bounded",
        annotations={**FAST, "autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "3"},
        replicas=1,
        container_concurrency=10,
    )
    pod = await cluster.add_pod("bounded", 0)

    async def at_min() -> bool:
        return await cluster.replicas("bounded") == 2

    # min-scale holds even before any metric: the activating PA is clamped to min (§4.4 step 4).
    await until(at_min, timeout=6, what="min-scale 2")
    pod.concurrency = 500.0

    async def at_max() -> bool:
        return await _desired(app, "bounded", 72) and await cluster.replicas("bounded") == 3

    await until(at_max, timeout=8, what="max-scale 3")
    await asyncio.sleep(1.0)
    assert await cluster.replicas("bounded") == 3


async def test_bad_config_rejected_previous_kept_and_live_reload(cluster: Cluster, caplog: Any) -> None:
    await cluster.set_config(CONFIG_NAME, {"max-scale-up-rate": "3"})
    app = await cluster.start_autoscaler()

    async def loaded() -> bool:
        return app.config.current.max_scale_up_rate == 3.0

    await until(loaded, what="initial config")
    with caplog.at_level(logging.ERROR, logger="autoscaler.config"):
        await cluster.set_config(CONFIG_NAME, {"max-scale-up-rate": "0.5", "stable-window": "banana"})
        await until(lambda: _logged(caplog, "max-scale-up-rate"), what="rejection log")
    text = caplog.text
    assert "max-scale-up-rate" in text and "stable-window" in text
    assert app.config.current.max_scale_up_rate == 3.0
    await cluster.set_config(CONFIG_NAME, {"max-scale-up-rate": "5"})

    async def reloaded() -> bool:
        return app.config.current.max_scale_up_rate == 5.0

    await until(reloaded, what="live reload")


async def _logged(caplog: Any, needle: str) -> bool:
    return needle in caplog.text


async def test_revision_deleted_mid_tick_no_error_storm(cluster: Cluster, caplog: Any) -> None:
    app = await cluster.start_autoscaler()
    await cluster.create_revision("doomed", annotations=FAST)
    await cluster.add_pod("doomed", 0)

    async def has_state() -> bool:
        return app.multiscaler.get(NS, "doomed") is not None and f"{NS}/doomed" in app.collector

    await until(has_state, what="decider and collection")
    with caplog.at_level(logging.WARNING):
        await cluster.custom.delete_namespaced_custom_object(
            "autoscaling.internal.knative.dev", "v1alpha1", NS, "podautoscalers", "doomed"
        )
        await cluster.apps_api.delete_namespaced_deployment("doomed-deployment", NS)

        async def gone() -> bool:
            return app.multiscaler.get(NS, "doomed") is None and f"{NS}/doomed" not in app.collector

        await until(gone, what="decider and collection dropped")
        await asyncio.sleep(2.5)  # a few ticks and scrapes later
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING and "doomed" in r.getMessage()]
    assert len(errors) <= 2, [r.getMessage() for r in errors]


async def test_pod_that_stops_answering_scrapes(cluster: Cluster) -> None:
    app = await cluster.start_autoscaler()
    await cluster.create_revision("hung", annotations=FAST, replicas=1, container_concurrency=10)
    pod = await cluster.add_pod("hung", 0, concurrency=7.0)

    async def steady() -> bool:
        return await _desired(app, "hung", 1)

    await until(steady, timeout=8, what="desired 1")
    await pod.stop()  # the pod stops answering: connection refused on its stats port

    async def failed() -> bool:
        return reasons(await cluster.metric("hung")).get("Ready") == "CollectionFailed"

    # §4.8: the scrape fails (3 s timeout), the collection's error is reported on the Metric...
    await until(failed, timeout=8, what="Metric CollectionFailed")
    # ...and the decider keeps its last decision rather than thrashing.
    assert await _desired(app, "hung", 1)
    assert await cluster.replicas("hung") == 1
    await pod.start()

    async def recovered() -> bool:
        return conds(await cluster.metric("hung")).get("Ready") == "True"

    await until(recovered, timeout=8, what="Metric Ready again")


@pytest.mark.parametrize("status", [409, 500])
async def test_scale_write_errors_retried_with_backoff(cluster: Cluster, status: int, caplog: Any) -> None:
    """API errors on /scale: retried with backoff, the decision kept, logged once per streak."""
    app = await cluster.start_autoscaler()
    await cluster.create_revision("flaky", annotations={**FAST, "autoscaling.knative.dev/min-scale": "2"})
    calls = 0
    real = app.api.patch_replicas

    async def failing(ns: str, ref: Mapping[str, Any], n: int) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            from autoscaler.kube import api_error

            raise api_error(status, "injected", "{}")
        await real(ns, ref, n)

    app.api.patch_replicas = failing  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.WARNING, logger="autoscaler.kube"):

        async def at_min() -> bool:
            return await cluster.replicas("flaky") == 2

        await until(at_min, timeout=8, what="scale after retries")
    assert calls == 4
    warnings = [r for r in caplog.records if "reconcile failed" in r.getMessage() and r.levelno >= logging.WARNING]
    # One warning per failure streak; conflicts are expected optimistic-concurrency noise (debug).
    assert len(warnings) == (0 if status == 409 else 1), [r.getMessage() for r in warnings]


async def test_scales_on_a_real_queue_proxy(cluster: Cluster) -> None:
    """A real `python -m proxy` process as the pod's queue-proxy: the autoscaler scrapes its
    :9090-equivalent port for protobuf stats and scales on the concurrency it measures."""
    release = asyncio.Event()

    async def slow_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    app = await cluster.start_autoscaler()
    # target 1 x 70 %: 3 requests in flight want ceil(3 / 0.7) = 5 pods.
    await cluster.create_revision("real", annotations={**FAST, "autoscaling.knative.dev/target": "1"})
    async with raw_upstream(slow_app) as user_port:
        qp = QueueProxySubprocess(
            user_port,
            SERVING_REVISION="real",
            SERVING_POD="real-pod-qp",
            SLUICE_METRICS_PORT=str(cluster.scrape_port),
        )
        await asyncio.to_thread(qp.start)
        try:
            await _register_pod(cluster, "real", "real-pod-qp", "127.0.0.1")
            requests = [
                asyncio.create_task(http_request(qp.port, get("/", host="real.default"), timeout=30)) for _ in range(3)
            ]

            async def scaled() -> bool:
                return await _desired(app, "real", 5) and await cluster.replicas("real") == 5

            await until(scaled, timeout=8, what="scale to 5 on queue-proxy stats")
            release.set()
            for r in requests:
                assert (await r).status == 200
        finally:
            release.set()
            qp.terminate()
            await asyncio.to_thread(qp.stop)


async def _register_pod(cluster: Cluster, revision: str, name: str, ip: str) -> None:
    labels = {"serving.knative.dev/revision": revision, "serving.knative.dev/revisionUID": f"uid-{revision}"}
    await cluster.core.create_namespaced_pod(
        NS, {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )
    await cluster.core.patch_namespaced_pod_status(
        name,
        NS,
        {
            "status": {
                "phase": "Running",
                "podIP": ip,
                "startTime": "2020-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )
