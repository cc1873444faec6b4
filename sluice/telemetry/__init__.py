"""Shared OpenTelemetry setup for the three components (CONTRACT.md §2.10, §3.10, §4.7):
config parsing (`config`), meter providers and exporters (`metrics`), tracer providers and
W3C/B3 propagation (`tracing`), the hot-path hook protocols (`hooks`), the resource attributes
(`resource`) and the loopback debug endpoint (`debug`).

Only `config` and `hooks` may be imported by a process that has metrics and tracing off: the
others import the OpenTelemetry SDK and exporters (the `otel` extra).
"""
