"""activator → queue-proxy → a user app instrumented with the OpenTelemetry SDK, everything
exporting to one real OTLP receiver (CONTRACT.md §2.10, §3.10): one trace, parent/child links
across the three processes, the activator's cold-start and queue-wait histograms and its
pre-1.19 names over a Prometheus scrape, and the activator's debug view."""

from __future__ import annotations

import asyncio
import json

from activator.config import ObservabilityConfig
from sluice.telemetry.config import ExportSettings, TraceSettings
from tests.activator.conftest import Kube, MakeActivator, eventually
from tests.support import QueueProxySubprocess, RawConnection, free_port, get, http_request
from tests.telemetry.conftest import UserApp
from tests.telemetry.prom import scrape
from tests.telemetry.receiver import OtlpReceiver

REV = "hello-00001"
KEY = ("default", REV)
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}


async def test_trace_and_metrics_through_activator_queue_proxy_and_app(
    kube: Kube, make_activator: MakeActivator, receiver: OtlpReceiver, user_app: UserApp
) -> None:
    qp_obs = {"tracing": {"protocol": "http/protobuf", "endpoint": receiver.http_endpoint, "samplingRate": 1}}
    qp = QueueProxySubprocess(
        user_app.port, OBSERVABILITY_CONFIG=json.dumps(qp_obs), CONTAINER_CONCURRENCY="1", OTEL_BSP_SCHEDULE_DELAY="50"
    ).start()
    try:
        await kube.create_revision(REV, cc=1)
        await kube.set_private(REV, [])  # no pod yet: the request is a cold start
        metrics_port = free_port()
        obs = ObservabilityConfig(
            ExportSettings("prometheus", f"127.0.0.1:{metrics_port}"),
            TraceSettings("grpc", receiver.grpc_endpoint, 1.0),
            legacy_prometheus_names=True,
        )
        act = await make_activator(observability=obs, debug_address=("127.0.0.1", 0))
        await eventually(lambda: act.revisions.get(KEY) is not None, timeout=10)
        conn = await RawConnection.open(act.port)
        await conn.send(get("/x", ROUTED, host="hello.default.example.com"))
        await eventually(lambda: act.revisions.entries[KEY].throttler.live_waiting == 1, timeout=10)
        await asyncio.sleep(0.2)
        await kube.set_private(REV, [("127.0.0.1", qp.port)])  # the pod became ready
        (resp,) = await conn.read_responses(1, timeout=15)
        await conn.close()
        assert resp.status == 200
        app_traceparent = resp.body.decode()

        # Metrics over the activator's Prometheus scrape (§3.10 plus Sluice's histograms).
        prom = await scrape(metrics_port)
        rev = {"kn_revision_name": REV, "k8s_namespace_name": "default", "kn_service_name": "hello"}
        assert prom.types["sluice_activator_cold_start_seconds"] == "histogram"
        (cold,) = prom.values("sluice_activator_cold_start_seconds_sum", **rev)
        assert 0.2 <= cold < 15
        assert prom.values("sluice_activator_cold_start_seconds_count", **rev) == [1]
        (wait,) = prom.values("sluice_queue_wait_seconds_sum", **rev)
        assert 0.2 <= wait <= cold
        assert prom.values("http_server_request_duration_seconds_count", http_response_status_code="200", **rev) == [1]
        assert prom.values("http_server_response_body_size_bytes_count", **rev) == [1]
        # otelhttp's transport towards the pod: the time to its head, after the cold start's wait.
        (client,) = [
            labels for labels in prom.labels("http_client_request_duration_seconds_count")
            if labels["kn_revision_name"] == REV
        ]  # fmt: skip
        assert client["server_address"] == "127.0.0.1" and client["server_port"] == str(qp.port)
        assert client["http_response_status_code"] == "200" and client["http_request_method"] == "GET"
        (upstream,) = prom.values("http_client_request_duration_seconds_sum", **rev)
        assert 0 < upstream < cold
        assert prom.values("activator_request_count", revision_name=REV, response_code_class="2xx") == [1]
        assert prom.values("kn_revision_request_active", **rev) == [0]
        assert prom.values("kn_activator_stats_conn_reachable") == [1]
        (target,) = prom.labels("target_info")
        assert target["k8s_container_name"] == "activator"

        # The activator's view of the revision.
        view = json.loads((await http_request(act.debug_port, get("/debug/revisions"))).body)
        mine = view[f"default/{REV}"]
        assert mine["containerConcurrency"] == 1 and mine["queued"] == 0
        assert [p["dest"] for p in mine["pods"]] == [f"127.0.0.1:{qp.port}"]
        assert mine["capacity"] >= 1

        # One trace: activator_proxy → throttler_try, kn.queueproxy.proxy → kn.queueproxy.wait, user.handle.
        def names() -> set[str]:
            return {s.name for s in receiver.spans()}

        want = {"activator_proxy", "throttler_try", "kn.queueproxy.proxy", "kn.queueproxy.wait", "user.handle"}
        await asyncio.to_thread(act.telemetry.tracing.flush)  # type: ignore[union-attr]
        await asyncio.to_thread(receiver.wait_for, lambda: want <= names())
    finally:
        qp.stop()
    spans = {s.name: s for s in receiver.spans()}
    root = spans["activator_proxy"]
    assert root.parent_span_id == "" and root.resource["k8s.container.name"] == "activator"
    # The activator serves many revisions: each span names its own (§3.10).
    assert root.attributes["kn.revision.name"] == REV and root.attributes["k8s.namespace.name"] == "default"
    assert {s.trace_id for s in spans.values()} == {root.trace_id}
    assert spans["throttler_try"].parent_span_id == root.span_id
    proxy = spans["kn.queueproxy.proxy"]
    assert proxy.parent_span_id == root.span_id and proxy.resource["k8s.container.name"] == "queue-proxy"
    assert spans["kn.queueproxy.wait"].parent_span_id == proxy.span_id
    assert spans["user.handle"].parent_span_id == proxy.span_id
    assert spans["user.handle"].resource["service.name"] == "user-app"
    assert app_traceparent == f"00-{root.trace_id}-{proxy.span_id}-01"
    assert set(receiver.transports) == {"grpc", "http"}  # the activator over gRPC, the others over HTTP
