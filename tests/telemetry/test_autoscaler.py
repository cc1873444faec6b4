"""The autoscaler explains itself (CONTRACT.md §4.7): decider gauges over a Prometheus scrape
and a real OTLP receiver, the debug endpoint's JSON, and the decision explanations computed
from the decider's own intermediate values."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

from tests.autoscaler.kpa_fixtures import NS, Cluster, until
from tests.autoscaler.test_scaling import BASE, FakeMetrics, _scaler
from tests.support import free_port, get, http_request
from tests.telemetry.prom import scrape
from tests.telemetry.receiver import OtlpReceiver

FAST = {"autoscaling.knative.dev/window": "6s"}


def test_decision_records_every_step_and_explains_why() -> None:
    # R=3, up-rate 2: maxUp = 6 < dspc = 10 (rate limited); dppc = 4, 4/3 < 2: stable.
    spec = replace(BASE, max_scale_up_rate=2.0)
    a = _scaler(3, FakeMetrics(concurrency=(100.0, 40.0)), spec)
    result = a.scale(1_000.0)
    d = a.last
    assert d is not None
    assert (d.ready, d.stable, d.panic, d.max_scale_up, d.max_scale_down) == (3, 100.0, 40.0, 6, 1)
    assert (d.dspc, d.dppc, d.desired, d.excess_burst_capacity) == (10, 4, result.desired_pod_count, -15)
    why = d.explain()["why"]
    assert why["mode"] == "stable"
    assert why["rateLimitsApplied"] == ["max scale-up rate: wanted 10, at most 6"]
    assert why["activatorInPath"] is True  # EBC -15 < 0
    assert why["scaleDownDelayHolding"] is False

    # Scale-down delay: the window keeps 10 while the decision wants 6 (§4.7 step 8).
    delayed = replace(BASE, scale_down_delay=4.0)
    metrics = FakeMetrics(concurrency=(100.0, 100.0))
    b = _scaler(10, metrics, delayed)
    b.scale(1_000.0)
    metrics.concurrency = (60.0, 60.0)
    assert b.scale(1_002.0).desired_pod_count == 10
    assert b.last is not None and (b.last.before_delay, b.last.desired) == (6, 10)
    assert b.last.explain()["why"]["scaleDownDelayHolding"] is True

    # Panic: dppc / R = 30 / 2 >= 2.
    c = _scaler(2, FakeMetrics(concurrency=(20.0, 300.0)))
    c.scale(1_000.0)
    assert c.last is not None and c.last.panicking
    assert c.last.explain()["why"]["mode"].startswith("panic")


async def test_decider_gauges_scrape_and_debug_endpoint(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    metrics_port = free_port()
    await cluster.set_config(
        "config-observability",
        {
            "metrics-protocol": "prometheus",
            "metrics-endpoint": f"127.0.0.1:{metrics_port}",
            "metrics.backend-destination": "prometheus",  # pre-1.19: warned about, naming the new key
        },
    )
    with caplog.at_level(logging.WARNING):
        app = await cluster.start_autoscaler(debug_address="127.0.0.1:0")
    assert any("'metrics.backend-destination'" in r.getMessage() and "'metrics-protocol'" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    await cluster.create_revision("burst", annotations=FAST, replicas=2, container_concurrency=10)
    pods = [await cluster.add_pod("burst", i) for i in range(2)]
    for p in pods:
        p.concurrency = 40.0  # cc 10 x 70 % = 7 per pod; 80 in total -> 12 pods, panic

    async def panicking() -> bool:
        decision = app.multiscaler.decisions().get(f"{NS}/burst")
        return decision is not None and decision.panicking

    await until(panicking, timeout=10, what="panic")
    assert app.telemetry is not None
    prom = await scrape(metrics_port)
    labels = {"kn_revision_name": "burst", "k8s_namespace_name": NS}
    assert prom.values("kn_revision_panic_mode", **labels) == [1]
    assert prom.values("kn_revision_concurrency_target", **labels) == [7.0]
    assert prom.values("kn_revision_pods_desired", **labels)[0] >= 12
    assert prom.values("kn_revision_concurrency_stable", **labels)
    assert prom.values("kn_revision_concurrency_panic", **labels)
    assert prom.values("kn_revision_capacity_excess", **labels)
    assert not prom.values("kn_revision_rps_stable_per_second", **labels)  # concurrency-scaled: no RPS gauges
    # The reconciler's pod counts (kpa.go reportMetrics) and the scrape timing (§4.7).
    assert prom.values("kn_revision_pods_count", **labels) == [2]

    async def requested() -> bool:  # the PA is reconciled again once the decision changed
        return (await scrape(metrics_port)).values("kn_revision_pods_requested", **labels)[0] >= 2

    await until(requested, timeout=10, what="kn.revision.pods.requested after the decision")
    for state in ("not_ready", "pending", "terminating"):
        assert prom.values(f"kn_revision_pods_{state}_count", **labels) == [0], state
    assert prom.values("kn_autoscaler_scrape_duration_seconds_count", **labels)[0] >= 1
    (target,) = prom.labels("target_info")
    assert target["k8s_container_name"] == "autoscaler" and target["service_name"] == "autoscaler"

    resp = await http_request(app.telemetry.debug_port, get("/debug/revisions"))
    assert resp.status == 200
    body = json.loads(resp.body)
    rev = body[f"{NS}/burst"]
    assert rev["spec"]["targetValue"] == 7.0
    assert rev["windows"]["stableWindowSeconds"] == 6.0 and rev["windows"]["panicWindowSeconds"] == 1.0
    assert set(rev["windows"]["concurrency"]) == {"stable", "panic"}
    last = rev["lastDecision"]
    assert last["panicMode"] is True and last["why"]["mode"].startswith("panic")
    assert last["desiredByPanicWindow"] >= 12
    assert (await http_request(app.telemetry.debug_port, get("/other"))).status == 404


async def test_decider_gauges_over_otlp_and_token_debug(cluster: Cluster) -> None:
    receiver = OtlpReceiver()
    try:
        await cluster.set_config(
            "config-observability",
            {
                "metrics-protocol": "grpc",
                "metrics-endpoint": receiver.grpc_endpoint,
                "metrics-export-interval": "200ms",
            },
        )
        app = await cluster.start_autoscaler(debug_address="127.0.0.1:0", debug_token="s3cret")
        await cluster.create_revision("otlp", annotations=FAST, replicas=1)
        await cluster.add_pod("otlp", 0, concurrency=3.0)

        def got() -> bool:
            return any(m.name == "kn.revision.pods.desired" for m in receiver.metrics())

        await asyncio.to_thread(receiver.wait_for, got)
        desired = receiver.metric("kn.revision.pods.desired")
        assert (desired.kind, desired.unit) == ("gauge", "{item}")
        attrs = desired.points[0][0]
        assert attrs["kn.revision.name"] == "otlp" and attrs["k8s.namespace.name"] == NS
        assert desired.resource["k8s.container.name"] == "autoscaler"
        assert receiver.metric("kn.revision.concurrency.stable").unit == "{concurrency}"
        assert receiver.metric("kn.revision.panic.mode").unit == ""
        assert app.telemetry is not None and app.telemetry.metrics_server is None
        port = app.telemetry.debug_port
        assert (await http_request(port, get("/debug/revisions"))).status == 401
        ok = await http_request(port, get("/debug/revisions", {"Authorization": "Bearer s3cret"}))
        assert ok.status == 200 and f"{NS}/otlp" in json.loads(ok.body)
    finally:
        receiver.close()
