"""OBSERVABILITY_CONFIG parsing (CONTRACT.md §2.10)."""

from __future__ import annotations

import json

import pytest

from proxy.observability import MetricsConfig, ObservabilityConfig, RuntimeConfig, TracingConfig
from proxy.requestlog import DEFAULT_REQUEST_LOG_TEMPLATE, RequestLogTemplate


@pytest.mark.parametrize(
    "text",
    ["", "  ", "{}", '{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{}}', '{"tracing":null}'],
)
def test_defaults(text: str) -> None:
    c = ObservabilityConfig.from_json(text)
    assert c == ObservabilityConfig()
    assert c.tracing == TracingConfig(protocol="none", endpoint="", sampling_rate=0.0)
    assert c.metrics == c.request_metrics == MetricsConfig(protocol="none", endpoint="", export_interval_ns=0)
    assert c.runtime == RuntimeConfig(profiling="disabled", export_interval_ns=0)
    assert c.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE
    assert not c.enable_request_log and not c.enable_probe_request_log and not c.request_log_enabled
    assert not c.profiling_enabled
    assert c.prometheus_address() is None


def test_full_config() -> None:
    text = json.dumps(
        {
            "tracing": {"protocol": "grpc", "endpoint": "otel:4317", "samplingRate": 0.25},
            "metrics": {"protocol": "http/protobuf", "endpoint": "http://m/v1", "exportInterval": 60_000_000_000},
            "runtime": {"profiling": "enabled", "exportInterval": 30_000_000_000},
            "requestMetrics": {"protocol": "prometheus", "endpoint": "", "exportInterval": 0},
            "enableRequestLog": True,
            "requestLogTemplate": "{{.Request.Method}}",
            "enableProbeRequestLog": True,
            "EnableVarLogCollection": True,
            "LoggingURLTemplate": "http://logs/${REVISION_UID}",
        }
    )
    c = ObservabilityConfig.from_json(text)
    assert c.tracing == TracingConfig("grpc", "otel:4317", 0.25)
    assert c.metrics == MetricsConfig("http/protobuf", "http://m/v1", 60_000_000_000)
    assert c.runtime == RuntimeConfig("enabled", 30_000_000_000)
    assert c.request_metrics == MetricsConfig("prometheus", "", 0)
    assert c.enable_request_log and c.enable_probe_request_log and c.request_log_enabled
    assert c.request_log_template == "{{.Request.Method}}"
    assert c.profiling_enabled
    # The template is usable as is.
    RequestLogTemplate.parse(c.request_log_template)


def test_explicit_empty_template_disables_request_logs() -> None:
    c = ObservabilityConfig.from_json('{"enableRequestLog": true, "requestLogTemplate": ""}')
    assert c.enable_request_log and c.request_log_template == ""
    assert not c.request_log_enabled
    kept = ObservabilityConfig.from_json('{"enableRequestLog": true}')
    assert kept.request_log_enabled and kept.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE


def test_keys_match_case_insensitively_like_go() -> None:
    c = ObservabilityConfig.from_json('{"EnableRequestLog": true, "RequestMetrics": {"Protocol": "prometheus"}}')
    assert c.enable_request_log
    assert c.request_metrics.protocol == "prometheus"
    # An exact match wins over a case-folded one.
    c2 = ObservabilityConfig.from_json('{"ENABLEREQUESTLOG": false, "enableRequestLog": true}')
    assert c2.enable_request_log


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [("", ("", 9091)), (":9095", ("", 9095)), ("0.0.0.0:9092", ("0.0.0.0", 9092)), ("[::]:9093", ("::", 9093))],
)
def test_prometheus_address(endpoint: str, address: tuple[str, int]) -> None:
    c = ObservabilityConfig.from_json(json.dumps({"requestMetrics": {"protocol": "prometheus", "endpoint": endpoint}}))
    assert c.prometheus_address() == address


def test_prometheus_only_from_request_metrics() -> None:
    c = ObservabilityConfig.from_json('{"metrics": {"protocol": "prometheus"}}')
    assert c.prometheus_address() is None


def test_from_env() -> None:
    assert ObservabilityConfig.from_env({}) == ObservabilityConfig()
    env = {"OBSERVABILITY_CONFIG": '{"enableProbeRequestLog": true}'}
    assert ObservabilityConfig.from_env(env).enable_probe_request_log


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("{oops", ["OBSERVABILITY_CONFIG: invalid JSON"]),
        ("[]", ["expected a JSON object"]),
        ('{"tracing": []}', ["OBSERVABILITY_CONFIG.tracing: expected a JSON object"]),
        ('{"metrics": {"exportInterval": "60s"}}', ["OBSERVABILITY_CONFIG.metrics.exportInterval", "nanoseconds"]),
        ('{"requestMetrics": {"protocol": "statsd"}}', ["OBSERVABILITY_CONFIG.requestMetrics.protocol", "statsd"]),
        ('{"tracing": {"samplingRate": 2}}', ["samplingRate"]),
        ('{"tracing": {"samplingRate": "1"}}', ["samplingRate", "a number"]),
        ('{"enableRequestLog": "true"}', ["OBSERVABILITY_CONFIG.enableRequestLog", "true or false"]),
        ('{"runtime": {"profiling": "on"}}', ["runtime.profiling"]),
        ('{"requestMetrics": {"protocol": "prometheus", "endpoint": "nohost"}}', ["requestMetrics.endpoint"]),
        (
            '{"metrics": {"protocol": "x"}, "tracing": {"protocol": "y"}, "enableRequestLog": 1}',
            ["metrics.protocol", "tracing.protocol", "enableRequestLog"],
        ),
    ],
)
def test_errors_name_every_bad_key(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        ObservabilityConfig.from_json(text)
    for fragment in fragments:
        assert fragment in str(info.value)
