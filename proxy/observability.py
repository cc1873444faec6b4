"""`OBSERVABILITY_CONFIG` (CONTRACT.md §2.10): the QP's tracing, metrics and request-log settings.

The controller serialises Knative's `observability.Config` (`pkg/observability/config.go`) to
JSON. Missing keys keep their defaults; durations are Go `time.Duration`s, i.e. JSON integers
in nanoseconds. Like Go's encoding/json, key matching is case-insensitive (an exact match wins)
and unknown keys are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.telemetry.config import ExportSettings, TraceSettings

__all__ = ["DEFAULT_REQUEST_LOG_TEMPLATE", "MetricsConfig", "ObservabilityConfig", "RuntimeConfig", "TracingConfig"]

ENV_KEY = "OBSERVABILITY_CONFIG"
# Opt-in for the pre-1.19 `revision_app_request_*` Prometheus names (proxy/telemetry.py). The
# controller builds the QP's env from Knative's structs, so this is set on the image or by a
# mutating webhook.
LEGACY_ENV = "SLUICE_LEGACY_PROMETHEUS_NAMES"

METRICS_PROTOCOLS = ("none", "prometheus", "grpc", "http/protobuf")
TRACING_PROTOCOLS = ("none", "grpc", "http/protobuf", "stdout")
PROFILING_VALUES = ("enabled", "disabled")

# `logging.request-log-template` in config-observability (config/core/configmaps/observability.yaml).
DEFAULT_REQUEST_LOG_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, '
    '"responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", '
    '"remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", '
    '"referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", '
    '"protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}'
)

# §2.3: the QP's Prometheus listener is forced to :9091 when the endpoint is empty.
DEFAULT_PROMETHEUS_PORT = 9091


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    protocol: str = "none"
    endpoint: str = ""
    export_interval_ns: int = 0  # <= 0 → the OTel default (60 s)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    protocol: str = "none"
    endpoint: str = ""
    sampling_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    profiling: str = "disabled"
    export_interval_ns: int = 0


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    tracing: TracingConfig = field(default_factory=TracingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    # The QP's meter provider (and so the :9091 listener) follows requestMetrics (§2.10).
    request_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    enable_request_log: bool = False
    # An explicit "" disables request logs; a missing key keeps Knative's default template.
    request_log_template: str = DEFAULT_REQUEST_LOG_TEMPLATE
    enable_probe_request_log: bool = False

    @property
    def request_log_enabled(self) -> bool:
        """§2.10: a line per request only when enabled *and* the template is non-empty."""
        return self.enable_request_log and self.request_log_template != ""

    @property
    def profiling_enabled(self) -> bool:
        return self.runtime.profiling == "enabled"

    # The shared settings types are imported on use: a pod with metrics and tracing off must not
    # pay their import at start (§2.2).
    @property
    def metrics_export(self) -> ExportSettings:
        """The QP's meter provider follows `requestMetrics` (§2.10)."""
        from sluice.telemetry.config import DEFAULT_EXPORT_INTERVAL, ExportSettings

        m = self.request_metrics
        interval = m.export_interval_ns / 1e9 if m.export_interval_ns > 0 else DEFAULT_EXPORT_INTERVAL
        return ExportSettings(m.protocol, m.endpoint, interval)

    @property
    def trace_export(self) -> TraceSettings:
        from sluice.telemetry.config import TraceSettings

        t = self.tracing
        return TraceSettings(t.protocol, t.endpoint, t.sampling_rate)

    def prometheus_address(self) -> tuple[str, int] | None:
        """(host, port) of the user-metrics listener, or None unless requestMetrics is prometheus.

        The endpoint may be `host:port`, `:port` or empty (→ all interfaces, 9091) (§2.3).
        """
        return self.metrics_export.prometheus_address(DEFAULT_PROMETHEUS_PORT)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ObservabilityConfig:
        return cls.from_json(environ.get(ENV_KEY, ""))

    @classmethod
    def from_json(cls, text: str) -> ObservabilityConfig:
        """Parse the JSON; empty/absent → defaults. Every bad key is reported in one ValueError."""
        if not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ENV_KEY}: invalid JSON ({exc}): {text!r}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{ENV_KEY}: expected a JSON object, got {type(raw).__name__}")
        errors: list[str] = []
        r = _Reader(raw, ENV_KEY, errors)
        config = cls(
            tracing=_tracing(r.obj("tracing"), errors),
            metrics=_metrics(r.obj("metrics"), errors),
            runtime=_runtime(r.obj("runtime"), errors),
            request_metrics=_metrics(r.obj("requestMetrics"), errors),
            enable_request_log=r.boolean("enableRequestLog", False),
            request_log_template=r.string("requestLogTemplate", DEFAULT_REQUEST_LOG_TEMPLATE),
            enable_probe_request_log=r.boolean("enableProbeRequestLog", False),
        )
        if config.request_metrics.protocol == "prometheus":
            endpoint = config.request_metrics.endpoint
            _, sep, port = endpoint.rpartition(":")
            if endpoint and (not sep or not port.isdigit() or not 0 < int(port) < 65536):
                errors.append(f"{ENV_KEY}.requestMetrics.endpoint: expected host:port, got {endpoint!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return config


class _Reader:
    """Typed access to one JSON object with Go encoding/json's case-insensitive key matching."""

    def __init__(self, raw: Mapping[str, Any], where: str, errors: list[str]) -> None:
        self.raw = raw
        self.where = where
        self.errors = errors
        self._folded = {k.lower(): k for k in reversed(list(raw))}

    def _get(self, key: str) -> tuple[bool, Any]:
        if key in self.raw:
            return True, self.raw[key]
        actual = self._folded.get(key.lower())
        if actual is None:
            return False, None
        return True, self.raw[actual]

    def _bad(self, key: str, want: str, value: Any) -> None:
        self.errors.append(f"{self.where}.{key}: expected {want}, got {json.dumps(value)}")

    def obj(self, key: str) -> _Reader:
        present, value = self._get(key)
        if present and value is not None and not isinstance(value, dict):
            self._bad(key, "a JSON object", value)
        return _Reader(value if isinstance(value, dict) else {}, f"{self.where}.{key}", self.errors)

    def string(self, key: str, default: str) -> str:
        present, value = self._get(key)
        if not present or value is None:
            return default
        if not isinstance(value, str):
            self._bad(key, "a string", value)
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        present, value = self._get(key)
        if not present or value is None:
            return default
        if not isinstance(value, bool):
            self._bad(key, "true or false", value)
            return default
        return value

    def duration_ns(self, key: str) -> int:
        present, value = self._get(key)
        if not present or value is None:
            return 0
        # time.Duration marshals as an integer number of nanoseconds; Go rejects strings.
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(key, "an integer number of nanoseconds", value)
            return 0
        return value

    def number(self, key: str, default: float) -> float:
        present, value = self._get(key)
        if not present or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._bad(key, "a number", value)
            return default
        return float(value)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in allowed:
            self._bad(key, "one of " + ", ".join(allowed), value)
            return default
        return value


def _metrics(r: _Reader, errors: list[str]) -> MetricsConfig:
    return MetricsConfig(
        protocol=r.choice("protocol", "none", METRICS_PROTOCOLS),
        endpoint=r.string("endpoint", ""),
        export_interval_ns=r.duration_ns("exportInterval"),
    )


def _tracing(r: _Reader, errors: list[str]) -> TracingConfig:
    rate = r.number("samplingRate", 0.0)
    if not 0.0 <= rate <= 1.0:
        errors.append(f"{r.where}.samplingRate: expected a number between 0 and 1, got {rate}")
    return TracingConfig(
        protocol=r.choice("protocol", "none", TRACING_PROTOCOLS),
        endpoint=r.string("endpoint", ""),
        sampling_rate=rate,
    )


def _runtime(r: _Reader, errors: list[str]) -> RuntimeConfig:
    return RuntimeConfig(
        profiling=r.choice("profiling", "disabled", PROFILING_VALUES),
        export_interval_ns=r.duration_ns("exportInterval"),
    )
