from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.activator.conftest import autoscaler, kube, make_activator  # noqa: F401  (fixtures reused here)
from tests.autoscaler.kpa_fixtures import cluster  # noqa: F401
from tests.proxy.conftest import make_qp  # noqa: F401
from tests.support import free_port
from tests.telemetry.receiver import OtlpReceiver

APP = Path(__file__).with_name("otel_app.py")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


class UserApp:
    def __init__(self, port: int, proc: subprocess.Popen[str]) -> None:
        self.port = port
        self.proc = proc


@pytest.fixture
def user_app(receiver: OtlpReceiver) -> Iterator[UserApp]:
    """The OTel-instrumented user container (a real subprocess) exporting to the receiver."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(port), receiver.http_endpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield UserApp(port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
