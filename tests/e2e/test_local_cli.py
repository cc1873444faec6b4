"""The CLI's bad-input paths, each without a running instance (nothing is started)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, cli

BAD = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: Bad_Name
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: "2s"
    spec:
      containerConcurrency: 5000
      containers:
        - image: example.com/app
"""


@pytest.mark.timeout(30)
def test_invalid_manifest_is_rejected_with_field_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    done = cli(tmp_path / "home", "up", "-f", str(path))
    assert done.returncode == 2
    err = done.stderr
    assert "metadata.name" in err
    assert "spec.template.spec.containerConcurrency: must be in [0, 1000], got 5000" in err
    assert "spec.template.metadata.annotations[autoscaling.knative.dev/window]" in err
    assert "spec.template.spec.containers[0].command: required" in err
    assert not (tmp_path / "home" / "state.json").exists()


@pytest.mark.timeout(30)
def test_busy_ingress_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = cli(tmp_path / "home", "up", "--port", str(port), "--net", "127.251")
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in done.stderr


@pytest.mark.timeout(30)
def test_status_and_down_when_not_running(tmp_path: Path) -> None:
    assert "not running" in cli(tmp_path / "home", "status").stdout
    assert "not running" in cli(tmp_path / "home", "down").stdout


@pytest.mark.timeout(30)
def test_help_lists_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    for command in ("up", "apply", "status", "report", "down"):
        assert command in done.stdout
