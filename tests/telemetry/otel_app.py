"""A user container instrumented with the OpenTelemetry SDK, as an application team would:
the W3C propagator extracts the incoming context and the app's span is its child, exported
over OTLP/HTTP to the endpoint given. Run as `python otel_app.py PORT OTLP_HTTP_ENDPOINT`;
prints "ready" once listening on 127.0.0.1:PORT. The response body is the traceparent received.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main() -> None:
    port, endpoint = int(sys.argv[1]), sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "user-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
    tracer = provider.get_tracer("user-app")
    propagator = TraceContextTextMapPropagator()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            carrier = {k.lower(): v for k, v in self.headers.items()}
            with tracer.start_as_current_span("user.handle", context=propagator.extract(carrier), kind=SpanKind.SERVER):
                body = carrier.get("traceparent", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
