"""Queue-proxy metrics and traces exported to a real OTLP receiver and a Prometheus scrape
(CONTRACT.md §2.10): names, units, attributes, resource attributes, span parentage down to an
OTel-instrumented user container, and the request log's traceId."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import pytest

from tests.proxy.conftest import MakeQP
from tests.support import free_port, get, http_request, raw_upstream, read_request_head
from tests.telemetry.conftest import UserApp
from tests.telemetry.prom import scrape
from tests.telemetry.receiver import OtlpReceiver

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


async def _created(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_otlp_metrics_names_units_attributes(make_qp: MakeQP, receiver: OtlpReceiver, protocol: str) -> None:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    obs = {"requestMetrics": {"protocol": protocol, "endpoint": endpoint, "exportInterval": 200_000_000}}
    async with raw_upstream(_created) as port:
        qp = await make_qp(port, OBSERVABILITY_CONFIG=json.dumps(obs), CONTAINER_CONCURRENCY="2", SERVING_SERVICE="svc")
        assert qp.user_metrics_server is None  # OTLP pushes; nothing listens on 9091
        for _ in range(3):
            assert (await http_request(qp.port, get("/"))).status == 201

        def got_three() -> bool:
            found = [m for m in receiver.metrics() if m.name == "kn.serving.invocation.duration"]
            return bool(found) and found[-1].points[0][1].count == 3

        await asyncio.to_thread(receiver.wait_for, got_three)
    assert set(receiver.transports) == {"grpc" if protocol == "grpc" else "http"}
    duration = receiver.metric("kn.serving.invocation.duration")
    assert (duration.kind, duration.unit) == ("histogram", "s")
    point_attrs, point = duration.points[0]
    assert point_attrs == {"http.response.status_code": 201}
    assert list(point.explicit_bounds) == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    resource = duration.resource
    assert resource["k8s.container.name"] == "queue-proxy"
    assert resource["service.name"] == "svc"  # SERVING_SERVICE, the first non-empty candidate
    for key in ("k8s.namespace.name", "k8s.pod.name", "kn.revision.name", "kn.configuration.name"):
        assert resource[key], key
    depth = receiver.metric("kn.serving.queue.depth")
    assert (depth.kind, depth.unit) == ("gauge", "{request}")
    wait = receiver.metric("sluice.queue.wait")
    assert (wait.kind, wait.unit) == ("histogram", "s")
    # otelhttp's server and client histograms (§2.10), as an OTLP receiver decodes them.
    units = {"http.server.request.duration": "s", "http.server.request.body.size": "By",
             "http.server.response.body.size": "By", "http.client.request.duration": "s",
             "http.client.request.body.size": "By"}  # fmt: skip
    for name, unit in units.items():
        metric = receiver.metric(name)
        assert (metric.kind, metric.unit) == ("histogram", unit), name
        assert sum(p.count for _, p in metric.points) == 3, name
    (server_attrs, response_size), *_ = receiver.metric("http.server.response.body.size").points
    assert server_attrs["http.response.status_code"] == 201 and server_attrs["kn.route.tag"] == "DISABLED"
    assert response_size.sum == 15  # three 5-byte bodies
    (client_attrs, _), *_ = receiver.metric("http.client.request.duration").points
    assert client_attrs["server.address"] == "127.0.0.1" and client_attrs["server.port"] == port


async def test_prometheus_scrape_has_resource_and_legacy_names(make_qp: MakeQP) -> None:
    metrics_port = free_port()
    obs = {"requestMetrics": {"protocol": "prometheus"}}
    async with raw_upstream(_created) as port:
        qp = await make_qp(
            port,
            OBSERVABILITY_CONFIG=json.dumps(obs),
            METRICS_PROMETHEUS_PORT=str(metrics_port),
            SLUICE_LEGACY_PROMETHEUS_NAMES="true",
        )
        assert (await http_request(qp.port, get("/"))).status == 201
        prom = await scrape(metrics_port)
    (target,) = prom.labels("target_info")
    assert target["k8s_container_name"] == "queue-proxy" and target["kn_revision_name"]
    assert prom.values("kn_serving_invocation_duration_seconds_count", http_response_status_code="201") == [1]
    # The runtime metrics (Go's in Knative, the process's and CPython's here), read at collection.
    (rss,) = prom.values("process_memory_usage_bytes")
    assert 5e6 < rss < 1e9
    assert {labels["cpu_mode"] for labels in prom.labels("process_cpu_time_seconds_total")} == {"user", "system"}
    assert len(prom.values("cpython_gc_collections_total")) == 3  # one per generation
    # The pre-1.19 names, with their labels and millisecond buckets.
    (labels,) = prom.labels("revision_app_request_count")
    assert labels["response_code"] == "201" and labels["response_code_class"] == "2xx"
    assert labels["revision_name"] == target["kn_revision_name"] and labels["container_name"] == "queue-proxy"
    assert prom.values("revision_app_request_count") == [1]
    assert prom.types["revision_app_request_latencies"] == "histogram"
    assert prom.values("revision_app_request_latencies_count") == [1]
    assert prom.values("revision_app_request_latencies_bucket", le="100000") == [1]


async def test_spans_link_incoming_parent_proxy_wait_and_user_app(
    make_qp: MakeQP, receiver: OtlpReceiver, user_app: UserApp
) -> None:
    obs = {
        "tracing": {"protocol": "http/protobuf", "endpoint": receiver.http_endpoint, "samplingRate": 1},
        "enableRequestLog": True,
    }
    qp = await make_qp(user_app.port, OBSERVABILITY_CONFIG=json.dumps(obs), CONTAINER_CONCURRENCY="1")
    assert qp.observer is not None
    sink = io.BytesIO()
    qp.observer.out = sink
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    resp = await http_request(qp.port, get("/", {"traceparent": traceparent}))
    assert resp.status == 200
    # What the app received is the proxy span's context, not the incoming one (#15962).
    received = resp.body.decode()
    assert received.startswith(f"00-{PARENT_TRACE}-") and PARENT_SPAN not in received
    # Untraced request: a new trace; the log line names it.
    assert (await http_request(qp.port, get("/"))).status == 200
    await asyncio.to_thread(qp.telemetry.tracing.flush)  # type: ignore[union-attr]

    def names() -> list[str]:
        return sorted(s.name for s in receiver.spans())

    await asyncio.to_thread(receiver.wait_for, lambda: names().count("user.handle") == 2)
    await asyncio.to_thread(receiver.wait_for, lambda: names().count("kn.queueproxy.proxy") == 2)
    spans = [s for s in receiver.spans() if s.trace_id == PARENT_TRACE]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"kn.queueproxy.proxy", "kn.queueproxy.wait", "user.handle"}
    proxy = by_name["kn.queueproxy.proxy"]
    assert proxy.parent_span_id == PARENT_SPAN
    assert by_name["kn.queueproxy.wait"].parent_span_id == proxy.span_id
    assert by_name["user.handle"].parent_span_id == proxy.span_id
    assert received == f"00-{PARENT_TRACE}-{proxy.span_id}-01"
    assert proxy.attributes["http.response.status_code"] == 200
    assert proxy.attributes["kn.revision.name"] and proxy.resource["k8s.container.name"] == "queue-proxy"
    lines = [json.loads(line) for line in sink.getvalue().decode().splitlines()]
    assert lines[0]["traceId"] == PARENT_TRACE
    other = {s.trace_id for s in receiver.spans() if s.name == "kn.queueproxy.proxy"} - {PARENT_TRACE}
    assert lines[1]["traceId"] == other.pop() != ""


async def test_b3_headers_are_read_and_sampling_zero_exports_nothing(
    make_qp: MakeQP, receiver: OtlpReceiver, user_app: UserApp
) -> None:
    obs = {"tracing": {"protocol": "grpc", "endpoint": receiver.grpc_endpoint, "samplingRate": 1}}
    qp = await make_qp(user_app.port, OBSERVABILITY_CONFIG=json.dumps(obs))
    b3 = {"X-B3-TraceId": PARENT_TRACE, "X-B3-SpanId": PARENT_SPAN, "X-B3-Sampled": "1"}
    resp = await http_request(qp.port, get("/", b3))
    assert resp.body.decode().startswith(f"00-{PARENT_TRACE}-")
    await asyncio.to_thread(qp.telemetry.tracing.flush)  # type: ignore[union-attr]
    await asyncio.to_thread(receiver.wait_for, lambda: any(s.name == "kn.queueproxy.proxy" for s in receiver.spans()))
    (proxy,) = [s for s in receiver.spans() if s.name == "kn.queueproxy.proxy"]
    assert (proxy.trace_id, proxy.parent_span_id) == (PARENT_TRACE, PARENT_SPAN)
    # No breaker (cc = 0): no wait span.
    assert not [s for s in receiver.spans() if s.name == "kn.queueproxy.wait"]

    unsampled = {"tracing": {"protocol": "grpc", "endpoint": receiver.grpc_endpoint, "samplingRate": 0}}
    qp0 = await make_qp(user_app.port, OBSERVABILITY_CONFIG=json.dumps(unsampled))
    resp = await http_request(qp0.port, get("/"))
    # Still propagated (sampled flag clear), so the trace id reaches the app; nothing is recorded.
    version, _trace, _span, flags = resp.body.decode().split("-")
    assert version == "00" and int(flags, 16) & 1 == 0
    await asyncio.to_thread(qp0.telemetry.tracing.flush)  # type: ignore[union-attr]
    assert len([s for s in receiver.spans() if s.name == "kn.queueproxy.proxy"]) == 1


def test_metrics_and_tracing_off_load_no_telemetry_library() -> None:
    code = (
        "import sys, json\n"
        "from tests.support import qp_env\n"
        "from proxy.__main__ import QueueProxyProcess\n"
        "from proxy.config import QueueProxyConfig\n"
        "from proxy.observability import ObservabilityConfig\n"
        "env = qp_env(8080, OBSERVABILITY_CONFIG=json.dumps({'enableRequestLog': True}))\n"
        "cfg = QueueProxyConfig.from_env(env)\n"
        "QueueProxyProcess(cfg, None, ObservabilityConfig.from_json(cfg.observability_config), env)\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "bad = sorted(loaded & {'opentelemetry', 'prometheus_client', 'grpc', 'google'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


async def test_otelhttp_histograms_attributes_and_sizes(make_qp: MakeQP) -> None:
    """otelhttp's semantic-convention attributes, Knative's `kn.route.tag`, body sizes as read
    and written (a chunked request body counted decoded), and the client side towards the app."""
    metrics_port = free_port()
    obs = {"requestMetrics": {"protocol": "prometheus", "endpoint": f"127.0.0.1:{metrics_port}"}}

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, headers, _ = await read_request_head(reader)
            if headers.get("transfer-encoding") == "chunked":
                await reader.readuntil(b"0\r\n\r\n")
            else:
                await reader.readexactly(int(headers.get("content-length", "0")))
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    async with raw_upstream(app) as port:
        qp = await make_qp(port, OBSERVABILITY_CONFIG=json.dumps(obs))
        tagged = (
            b"POST /x HTTP/1.1\r\nHost: example.com:8080\r\nKnative-Serving-Tag: blue\r\n"
            b"Content-Length: 11\r\n\r\nhello world"
        )
        chunked = (
            b"PUT /y HTTP/1.1\r\nHost: example.com\r\nKnative-Serving-Default-Route: true\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        assert (await http_request(qp.port, tagged)).status == 201
        assert (await http_request(qp.port, chunked)).status == 201
        prom = await scrape(metrics_port)
    by_tag = {labels["kn_route_tag"]: labels for labels in prom.labels("http_server_request_duration_seconds_count")}
    assert set(by_tag) == {"blue", "DEFAULT"}
    blue = by_tag["blue"]
    assert blue["http_request_method"] == "POST" and blue["url_scheme"] == "http"
    assert blue["server_address"] == "example.com" and blue["server_port"] == "8080"
    assert blue["network_protocol_version"] == "1.1" and blue["http_response_status_code"] == "201"
    assert by_tag["DEFAULT"].get("server_port", "") == ""  # a default port is left out (the exporter pads "")
    assert prom.values("http_server_request_body_size_bytes_sum", kn_route_tag="blue") == [11]
    assert prom.values("http_server_request_body_size_bytes_sum", kn_route_tag="DEFAULT") == [7]
    assert prom.values("http_server_response_body_size_bytes_sum", kn_route_tag="blue") == [5]
    (client,) = [labels for labels in prom.labels("http_client_request_duration_seconds_count")
                 if labels["http_request_method"] == "PUT"]  # fmt: skip
    assert client["server_address"] == "127.0.0.1" and client["server_port"] == str(port)
    assert client["http_response_status_code"] == "201"
    assert prom.values("http_client_request_body_size_bytes_sum", http_request_method="PUT") == [7]


async def test_prometheus_series_carry_the_revision(make_qp: MakeQP) -> None:
    metrics_port = free_port()
    obs = {"requestMetrics": {"protocol": "prometheus", "endpoint": f"127.0.0.1:{metrics_port}"}}
    async with raw_upstream(_created) as port:
        qp = await make_qp(port, OBSERVABILITY_CONFIG=json.dumps(obs), SERVING_SERVICE="svc")
        assert (await http_request(qp.port, get("/"))).status == 201
        prom = await scrape(metrics_port)
    (labels,) = prom.labels("kn_serving_invocation_duration_seconds_count")
    assert labels["kn_service_name"] == "svc" and labels["kn_revision_name"] and labels["k8s_namespace_name"]
    assert "k8s_pod_name" not in labels  # only the revision's attributes are copied
