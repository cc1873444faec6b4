"""One real `sluice local` instance for the e2e suite: `python -m sluice.local.cli local up` as a
subprocess (its own process group, its own state dir and loopback block), with short windows so
the suite stays within a few minutes. Each test applies its own Service.

The instance needs the activator and the autoscaler; the suite skips only while those cannot be
imported.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _components_importable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import activator.__main__, autoscaler.__main__"], capture_output=True, cwd=ROOT
    )
    return probe.returncode == 0


# config-autoscaler for the suite: scale to zero 3 s after the 6 s window (Knative: 30 s / 60 s).
AUTOSCALER_CONFIG = (
    "scale-to-zero-grace-period=3s",
    "stable-window=6s",
    "allow-zero-initial-scale=true",
)


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@dataclass
class Local:
    home: Path
    port: int
    net: str
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.home / "status.json").read_text())
        except (OSError, ValueError):
            return {"services": []}
        return data

    def service(self, name: str) -> dict[str, Any] | None:
        for svc in self.snapshot().get("services") or ():
            if svc["name"] == name:
                out: dict[str, Any] = svc
                return out
        return None

    def apply(self, body: dict[str, Any]) -> None:
        path = self.home / f"{body['metadata']['name']}-{random.randrange(1 << 30)}.yaml"
        path.write_text(yaml.safe_dump(body))
        done = cli(self.home, "apply", "-f", str(path))
        assert done.returncode == 0, done.stderr

    def wait_for(self, what: str, predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; status: {json.dumps(self.snapshot())}")

    def ready_pods(self, name: str) -> int:
        svc = self.service(name)
        return sum(r["ready_pods"] for r in svc["revisions"]) if svc else 0

    def pods(self, name: str) -> list[dict[str, Any]]:
        svc = self.service(name)
        return [p for r in svc["revisions"] for p in r["pods"]] if svc else []


@pytest.fixture(scope="session")
def local() -> Iterator[Local]:
    if not _components_importable():
        pytest.skip("the activator / autoscaler are not importable yet")
    home = Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    port = free_port()
    net = f"127.{random.randrange(100, 250)}"
    argv = [
        sys.executable,
        "-m",
        "sluice.local.cli",
        "local",
        "--home",
        str(home),
        "up",
        "--port",
        str(port),
        "--net",
        net,
        "--drain-quiet-period",
        "1",
    ]
    for item in AUTOSCALER_CONFIG:
        argv += ["--autoscaler-config", item]
    log = (home / "up.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    instance = Local(home, port, net, proc)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = _read(home / "state.json")
            if state.get("ready") and (home / "status.json").exists():
                break
            if proc.poll() is not None:
                pytest.fail(f"sluice local up exited: {(home / 'up.log').read_text()}")
            time.sleep(0.2)
        else:
            pytest.fail(f"sluice local up not ready in 60 s: {(home / 'up.log').read_text()}")
        yield instance
    finally:
        state = _read(home / "state.json")
        cli(home, "down", timeout=60)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for p in state.get("processes") or ():
            try:
                os.killpg(int(p["pid"]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.close()


def _read(path: Path) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads(path.read_text())
        return out
    except (OSError, ValueError):
        return {}


def service(
    name: str,
    annotations: dict[str, str] | None = None,
    cc: int = 0,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    revision: str | None = None,
    traffic: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ann = {"autoscaling.knative.dev/window": "6s"} | (annotations or {})
    template_meta: dict[str, Any] = {"annotations": ann}
    if revision:
        template_meta["name"] = revision
    container: dict[str, Any] = {
        "image": "autoscale-sample",
        "command": command or [sys.executable, str(EXAMPLES / "autoscale.py")],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "readinessProbe": {"httpGet": {"path": "/healthz"}},
    }
    spec: dict[str, Any] = {
        "template": {
            "metadata": template_meta,
            "spec": {"containerConcurrency": cc, "timeoutSeconds": 30, "containers": [container]},
        }
    }
    if traffic is not None:
        spec["traffic"] = traffic
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


async def fetch(session: Any, url: str, host: str, timeout: float = 30) -> tuple[int, str]:
    import aiohttp

    try:
        async with session.get(url, headers={"Host": host}, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.text()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return -1, repr(exc)
