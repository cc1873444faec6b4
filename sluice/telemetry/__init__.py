"""Shared OpenTelemetry setup for the three components (CONTRACT.md §2.10, §3.10, §4.7):
settings from `config-observability` / `OBSERVABILITY_CONFIG` (`config`), meter providers with
Prometheus / OTLP export and the scrape handler (`metrics`), tracer providers with W3C + B3
propagation and per-request server spans (`tracing`), the hot-path hook protocols (`hooks`),
resource attributes (`resource`), shared instruments and buckets (`instruments`), the opt-in
pre-1.19 Prometheus names (`legacy`) and the loopback/token debug endpoint (`debug`).

The OpenTelemetry SDK, exporters and prometheus_client (the `otel` extra) are imported only when
a `MetricsExport` or `Tracing` is built, i.e. when a protocol other than `none` is configured; a
queue-proxy with both off imports `hooks` alone.
"""
