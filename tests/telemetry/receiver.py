"""A real OTLP receiver for the tests, built on the official OTLP protobuf definitions
(`opentelemetry-proto`: the generated messages and gRPC service stubs), so what our exporters
send is decoded exactly as an OpenTelemetry Collector would decode it. No Collector binary is
installable from the registries this project uses (PyPI, Debian, npm).

gRPC: MetricsService/Export and TraceService/Export on one grpc server. HTTP: POST
/v1/metrics and /v1/traces with `application/x-protobuf` bodies, on a threaded http.server.
Everything listens on 127.0.0.1 and is stopped by `close()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedMetric", "ReceivedSpan", "attrs"]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass
class ReceivedMetric:
    name: str
    unit: str
    kind: str  # histogram, gauge, sum
    resource: dict[str, Any]
    points: list[tuple[dict[str, Any], Any]] = field(default_factory=list)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


class OtlpReceiver:
    def __init__(self) -> None:
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.transports: list[str] = []  # "grpc" or "http", per request received
        self._lock = threading.Lock()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        receiver = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._got_metrics(request, "grpc")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._got_traces(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._grpc)  # type: ignore[no-untyped-call]
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._grpc)  # type: ignore[no-untyped-call]
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Http(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(415)
                    self.end_headers()
                    return
                if self.path == "/v1/metrics":
                    metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    receiver._got_metrics(metrics, "http")
                    answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                elif self.path == "/v1/traces":
                    traces = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    receiver._got_traces(traces, "http")
                    answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _got_metrics(self, request: Any, transport: str) -> None:
        with self._lock:
            self.metric_requests.append(request)
            self.transports.append(transport)

    def _got_traces(self, request: Any, transport: str) -> None:
        with self._lock:
            self.trace_requests.append(request)
            self.transports.append(transport)

    def metrics(self) -> Iterator[ReceivedMetric]:
        with self._lock:
            requests = list(self.metric_requests)
        for request in requests:
            for rm in request.resource_metrics:
                resource = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        out = ReceivedMetric(m.name, m.unit, kind, resource)
                        for p in getattr(m, kind).data_points:
                            out.points.append((attrs(p.attributes), p))
                        yield out

    def metric(self, name: str) -> ReceivedMetric:
        """The last export of `name`."""
        found = [m for m in self.metrics() if m.name == name]
        assert found, f"{name} never received; got {sorted({m.name for m in self.metrics()})}"
        return found[-1]

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.trace_requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            ReceivedSpan(
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.kind,
                                attrs(s.attributes),
                                resource,
                            )
                        )
        return out

    def wait_for(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("the receiver did not get what was expected in time")
            time.sleep(0.05)

    def close(self) -> None:
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()
