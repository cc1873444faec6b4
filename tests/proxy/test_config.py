"""Env parsing (CONTRACT.md §2.1): every bad variable named in one error, at start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.config import QueueProxyConfig
from sluice.config import ConfigError
from tests.support import ROOT, qp_env


def test_full_environment_parses() -> None:
    cfg = QueueProxyConfig.from_env(qp_env(8080, CONTAINER_CONCURRENCY="10", REVISION_IDLE_TIMEOUT_SECONDS="5"))
    assert cfg.container_concurrency == 10
    assert cfg.revision_idle_timeout_seconds == 5
    assert cfg.revision_response_start_timeout_seconds == 0  # absent → disabled
    assert cfg.admin_port == 0 and cfg.drain_quiet_period == 30.0


def test_every_bad_variable_is_named() -> None:
    env = qp_env(8080, CONTAINER_CONCURRENCY="ten", USER_PORT="99999", ENABLE_MULTI_CONTAINER_PROBES="maybe")
    del env["SERVING_POD"]
    del env["SERVING_LOGGING_LEVEL"]
    with pytest.raises(ConfigError) as info:
        QueueProxyConfig.from_env(env)
    text = str(info.value)
    for key in (
        "CONTAINER_CONCURRENCY",
        "USER_PORT",
        "ENABLE_MULTI_CONTAINER_PROBES",
        "SERVING_POD",
        "SERVING_LOGGING_LEVEL",
    ):
        assert key in text
    assert len(info.value.problems) == 5


def test_empty_strings_are_accepted_for_required_string_fields() -> None:
    cfg = QueueProxyConfig.from_env(qp_env(8080, SERVING_CONFIGURATION=""))
    assert cfg.serving_configuration == ""


def test_process_exits_non_zero_naming_missing_variables() -> None:
    env = {"PATH": "/usr/bin:/bin", "SERVING_NAMESPACE": "default"}
    out = subprocess.run([sys.executable, "-m", "proxy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    for key in ("SERVING_REVISION", "SERVING_POD", "USER_PORT", "CONTAINER_CONCURRENCY", "REVISION_TIMEOUT_SECONDS"):
        assert key in out.stderr
    assert out.stderr.count("\n") == 1  # one message


def test_bad_readiness_probe_json_stops_the_process() -> None:
    env = qp_env(8080, SERVING_READINESS_PROBE="{not json", QUEUE_SERVING_PORT="1")
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([sys.executable, "-m", "proxy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "SERVING_READINESS_PROBE" in out.stderr
