"""`config-observability` parsing for the activator and autoscaler (CONTRACT.md §3.10, §4.7),
warnings for pre-1.19 keys, OTLP endpoint forms, and a missing `otel` extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluice.telemetry.config import ExportSettings, ObservabilitySettings, TraceSettings, legacy_key_warnings
from sluice.telemetry.metrics import grpc_target, otlp_url


def test_defaults_are_off() -> None:
    s = ObservabilitySettings.from_configmap({})
    assert s == ObservabilitySettings()
    assert not s.metrics.enabled and not s.tracing.enabled and not s.legacy_prometheus_names
    assert s.metrics.interval == 60.0


def test_all_keys() -> None:
    s = ObservabilitySettings.from_configmap(
        {
            "metrics-protocol": "http/protobuf",
            "metrics-endpoint": "http://collector:4318/v1/metrics",
            "metrics-export-interval": "15s",
            "tracing-protocol": "grpc",
            "tracing-endpoint": "collector:4317",
            "tracing-sampling-rate": "0.25",
            "sluice-legacy-prometheus-names": "true",
        }
    )
    assert s.metrics == ExportSettings("http/protobuf", "http://collector:4318/v1/metrics", 15.0)
    assert s.tracing == TraceSettings("grpc", "collector:4317", 0.25)
    assert s.legacy_prometheus_names


def test_every_bad_key_in_one_error() -> None:
    with pytest.raises(ValueError) as info:
        ObservabilitySettings.from_configmap(
            {
                "metrics-protocol": "opencensus",
                "metrics-export-interval": "soon",
                "tracing-protocol": "zipkin",
                "tracing-sampling-rate": "1.5",
                "sluice-legacy-prometheus-names": "maybe",
            }
        )
    text = str(info.value)
    for key in (
        "metrics-protocol", "metrics-export-interval", "tracing-protocol", "tracing-sampling-rate",
        "sluice-legacy-prometheus-names",
    ):  # fmt: skip
        assert key in text
    with pytest.raises(ValueError, match="metrics-endpoint"):
        ObservabilitySettings.from_configmap({"metrics-protocol": "prometheus", "metrics-endpoint": "nohost"})


def test_prometheus_address() -> None:
    assert ExportSettings("prometheus").prometheus_address(9090) == ("", 9090)
    assert ExportSettings("prometheus", "127.0.0.1:9999").prometheus_address(9090) == ("127.0.0.1", 9999)
    assert ExportSettings("prometheus", ":9999").prometheus_address(9090) == ("", 9999)
    assert ExportSettings("grpc", "x:1").prometheus_address(9090) is None


def test_pre_119_keys_are_named_with_their_replacement() -> None:
    data = {"metrics.backend-destination": "prometheus", "profiling.enable": "true", "debug": "true"}
    warnings = legacy_key_warnings({**data, "metrics-protocol": ""})
    assert warnings == [
        "config-observability key 'debug' was removed in Knative 1.19 and is ignored",
        "config-observability key 'metrics.backend-destination' is ignored since Knative 1.19: use 'metrics-protocol'",
        "config-observability key 'profiling.enable' is ignored since Knative 1.19: use 'runtime-profiling'",
    ]


def test_otlp_endpoint_forms() -> None:
    assert otlp_url("http://c:4318", "metrics") == "http://c:4318/v1/metrics"
    assert otlp_url("c:4318", "traces") == "http://c:4318/v1/traces"
    assert otlp_url("https://c/custom/path", "traces") == "https://c/custom/path"
    assert grpc_target("http://c:4317") == ("c:4317", True)
    assert grpc_target("https://c:4317") == ("c:4317", False)
    assert grpc_target("c:4317") == ("c:4317", True)


def test_missing_otel_extra_keeps_the_queue_proxy_serving() -> None:
    # A queue-proxy image without the `otel` extra, configured for metrics: an error naming the
    # extra, and no telemetry, rather than a pod that cannot start.
    code = (
        "import sys, json, logging, io\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('opentelemetry', 'prometheus_client'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "from tests.support import qp_env\n"
        "from proxy.__main__ import QueueProxyProcess\n"
        "from proxy.config import QueueProxyConfig\n"
        "from proxy.observability import ObservabilityConfig\n"
        "env = qp_env(8080, OBSERVABILITY_CONFIG=json.dumps({'requestMetrics': {'protocol': 'prometheus'}}))\n"
        "cfg = QueueProxyConfig.from_env(env)\n"
        "p = QueueProxyProcess(cfg, None, ObservabilityConfig.from_json(cfg.observability_config), env)\n"
        "print('telemetry', p.telemetry, p.user_metrics_server)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "knative-sluice[otel]" in out.stdout
    assert "telemetry None None" in out.stdout
