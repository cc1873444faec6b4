"""What to export, and where: the settings every component's OpenTelemetry setup reads.

The queue-proxy gets them from `OBSERVABILITY_CONFIG` (CONTRACT.md §2.10, parsed in
`proxy/observability.py`), the activator and autoscaler from the `config-observability`
ConfigMap (§3.10, §4.7) through `from_configmap` here. Importing this module loads no
OpenTelemetry package: a component with everything off never imports one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config import parse_go_bool, parse_go_duration

__all__ = [
    "LEGACY_KEYS",
    "METRICS_PROTOCOLS",
    "TRACING_PROTOCOLS",
    "ExportSettings",
    "ObservabilitySettings",
    "TraceSettings",
    "legacy_key_warnings",
    "missing_extra",
]

log = logging.getLogger("sluice.telemetry")

METRICS_PROTOCOLS = ("none", "prometheus", "grpc", "http/protobuf")
TRACING_PROTOCOLS = ("none", "grpc", "http/protobuf", "stdout")

# OTel's default export interval, used when none is configured (`exportInterval` <= 0).
DEFAULT_EXPORT_INTERVAL = 60.0

# Pre-1.19 `config-observability` (and `config-tracing`) keys, with the key that replaced each
# (Knative 1.19 moved to OpenTelemetry; the old keys are silently ignored by Go, which is how
# users lost their dashboards: knative/operator#2121). None: removed without replacement.
LEGACY_KEYS: dict[str, str | None] = {
    "metrics.backend-destination": "metrics-protocol",
    "metrics.request-metrics-backend-destination": "request-metrics-protocol",
    "metrics.opencensus-address": "metrics-endpoint",
    "metrics.reporting-period-seconds": "metrics-export-interval",
    "metrics.request-metrics-reporting-period-seconds": "request-metrics-export-interval",
    "metrics.allow-stackdriver-custom-metrics": None,
    "metrics.stackdriver-custom-metrics-subdomain": None,
    "profiling.enable": "runtime-profiling",
    "backend": "tracing-protocol",
    "zipkin-endpoint": "tracing-endpoint",
    "sample-rate": "tracing-sampling-rate",
    "debug": None,
}


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """One meter provider's export: `none`, `prometheus` (a scrape listener) or OTLP."""

    protocol: str = "none"
    endpoint: str = ""
    interval: float = DEFAULT_EXPORT_INTERVAL  # seconds, OTLP only

    @property
    def enabled(self) -> bool:
        return self.protocol != "none"

    def prometheus_address(self, default_port: int) -> tuple[str, int] | None:
        """(host, port) of the scrape listener, or None unless the protocol is prometheus.

        The endpoint may be `host:port`, `:port` or empty (all interfaces, `default_port`)."""
        if self.protocol != "prometheus":
            return None
        if not self.endpoint:
            return "", default_port
        host, _, port = self.endpoint.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class TraceSettings:
    protocol: str = "none"
    endpoint: str = ""
    sampling_rate: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.protocol != "none"


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    """`config-observability` as the activator and autoscaler read it (§3.10, §4.7)."""

    metrics: ExportSettings = ExportSettings()
    tracing: TraceSettings = TraceSettings()
    # Sluice's opt-in: the pre-1.19 Prometheus names beside the OTel ones (README feature table).
    legacy_prometheus_names: bool = False

    @classmethod
    def from_configmap(cls, data: Mapping[str, str], where: str = "config-observability") -> ObservabilitySettings:
        """Parses the keys; every bad value is reported in one ValueError naming the key."""
        errors: list[str] = []
        metrics = ExportSettings(
            protocol=_choice(data, "metrics-protocol", METRICS_PROTOCOLS, where, errors),
            endpoint=data.get("metrics-endpoint", "").strip(),
            interval=_interval(data, "metrics-export-interval", where, errors),
        )
        rate_text = data.get("tracing-sampling-rate", "").strip()
        rate = 0.0
        if rate_text:
            try:
                rate = float(rate_text)
            except ValueError:
                rate = -1.0
            if not 0.0 <= rate <= 1.0:
                errors.append(f"{where}: tracing-sampling-rate: expected a number between 0 and 1, got {rate_text!r}")
                rate = 0.0
        tracing = TraceSettings(
            protocol=_choice(data, "tracing-protocol", TRACING_PROTOCOLS, where, errors),
            endpoint=data.get("tracing-endpoint", "").strip(),
            sampling_rate=rate,
        )
        legacy = False
        legacy_text = data.get("sluice-legacy-prometheus-names", "").strip()
        if legacy_text:
            try:
                legacy = parse_go_bool(legacy_text)
            except ValueError:
                errors.append(f"{where}: sluice-legacy-prometheus-names: expected true or false, got {legacy_text!r}")
        if metrics.protocol == "prometheus" and metrics.endpoint:
            _, sep, port = metrics.endpoint.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                errors.append(f"{where}: metrics-endpoint: expected host:port, got {metrics.endpoint!r}")
        if errors:
            raise ValueError("; ".join(errors))
        for line in legacy_key_warnings(data):
            log.warning(line, extra={"fields": {"configmap": where}})
        return cls(metrics, tracing, legacy)


def legacy_key_warnings(data: Mapping[str, str]) -> list[str]:
    """One warning per pre-1.19 key present, naming the key that replaced it."""
    out = []
    for key in sorted(data):
        if key in LEGACY_KEYS:
            new = LEGACY_KEYS[key]
            if new is None:
                out.append(f"config-observability key {key!r} was removed in Knative 1.19 and is ignored")
            else:
                out.append(f"config-observability key {key!r} is ignored since Knative 1.19: use {new!r}")
    return out


def _choice(data: Mapping[str, str], key: str, allowed: tuple[str, ...], where: str, errors: list[str]) -> str:
    value = data.get(key, "").strip().lower() or "none"
    if value not in allowed:
        errors.append(f"{where}: {key}: expected one of {', '.join(allowed)}, got {value!r}")
        return "none"
    return value


def _interval(data: Mapping[str, str], key: str, where: str, errors: list[str]) -> float:
    text = data.get(key, "").strip()
    if not text:
        return DEFAULT_EXPORT_INTERVAL
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        errors.append(f"{where}: {key}: expected a duration such as 60s, got {text!r}")
        return DEFAULT_EXPORT_INTERVAL
    return seconds if seconds > 0 else DEFAULT_EXPORT_INTERVAL


def missing_extra(exc: ImportError) -> str:
    """The error logged when metrics or tracing are configured but the OpenTelemetry packages
    are not installed: the component keeps serving without them rather than failing its pod."""
    return (
        f"metrics/tracing are configured but the OpenTelemetry packages are missing ({exc}); "
        "install the `otel` extra (pip install 'knative-sluice[otel]'); continuing without them"
    )
