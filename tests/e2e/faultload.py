"""Paced load with faults against a real `sluice local`: a per-request client (a new connection
for every request, as the issue's fault run used) at a fixed rate for a bounded time, with
SIGKILLs of chosen processes at chosen moments, counting the answers by status.

Used by tests/e2e/test_local_faults.py, and runnable alone to measure a tree (its own
`sluice local` on a random loopback block; everything it starts is killed at the end):

    python -m tests.e2e.faultload [--root TREE] [--rate 150] [--seconds 10] [--serve]

`--root` runs another checkout's code (e.g. a worktree of main, for "before" numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "127.0.0.1.sslip.io"


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # bodies / exceptions of the failures
    kills: dict[str, float] = field(default_factory=dict)  # what was killed, at which second
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def summary(self) -> str:
        refused = sum("refused" in e for e in self.errors)
        ordered = sorted(self.latencies) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{self.total} requests, {self.failed} not 2xx ({refused} mention a refused connection); "
            f"statuses {dict(sorted(self.statuses.items()))}; kills at {self.kills}; "
            f"latency p99 {p99:.3f} s, max {ordered[-1]:.3f} s"
        )


async def paced_load(
    url: str,
    host: str,
    rate: float,
    seconds: float,
    faults: list[tuple[float, str, Callable[[], None]]],
    request_timeout: float = 30.0,
) -> LoadResult:
    """`rate` requests per second for `seconds`, each on a new connection; `faults` are
    (second, label, action) run at that second. Returns when every request is answered."""
    result = LoadResult()
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(session: aiohttp.ClientSession) -> None:
        sent = loop.time()
        try:
            async with session.get(url, headers={"Host": host}) as resp:
                body = await resp.text()
                result.statuses[resp.status] += 1
                if not 200 <= resp.status < 300:
                    result.errors.append(f"{resp.status} {body.strip()[:120]}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            result.statuses[-1] += 1
            result.errors.append(repr(exc))
        result.latencies.append(loop.time() - sent)

    pending = sorted(faults, key=lambda f: f[0])
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Task[None]] = []
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            while pending and pending[0][0] <= due - start:
                _, label, action = pending.pop(0)
                action()
                result.kills[label] = round(loop.time() - start, 2)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(session)))
        await asyncio.gather(*tasks)
    return result


def state_processes(home: Path) -> list[dict[str, Any]]:
    try:
        procs: list[dict[str, Any]] = json.loads((home / "state.json").read_text()).get("processes") or []
    except (OSError, ValueError):
        return []
    return procs


def pid_of(home: Path, name: str) -> int:
    """The pid of the process state.json calls `name`, or `<pod path>/name`."""
    for p in state_processes(home):
        if p["name"] == name or str(p["name"]).endswith("/" + name):
            return int(p["pid"])
    raise LookupError(f"no process named {name} in {home / 'state.json'}")


def sigkill(pid: int) -> Callable[[], None]:
    def kill() -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    return kill


def service_manifest(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    container = {
        "image": "autoscale-sample",
        "command": [sys.executable, str(ROOT / "examples" / "autoscale.py")],
        "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containerConcurrency": 0, "timeoutSeconds": 30, "containers": [container]},
            }
        },
    }


# Two pods always (one can die), and the activator always in the path (target-burst-capacity
# -1), so one run sees both hops: the activator choosing pods and the ingress choosing activators.
FAULT_ANNOTATIONS = {
    "autoscaling.knative.dev/min-scale": "2",
    "autoscaling.knative.dev/target-burst-capacity": "-1",
}


def _cli(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )


def _status_pods(home: Path, name: str) -> list[dict[str, Any]]:
    try:
        data = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        return []
    for svc in data.get("services") or ():
        if svc["name"] == name:
            return [p for r in svc["revisions"] for p in r["pods"]]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="target-burst-capacity 0: the ingress sends to the pods directly (Serve mode); only a pod is killed",
    )
    args = parser.parse_args()
    root = args.root.resolve()
    home = Path(tempfile.mkdtemp(prefix="sluice-faults-"))
    port = random.randrange(20000, 30000)
    net = f"127.{random.randrange(100, 250)}"
    argv = [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), "up", "--port", str(port)]
    argv += ["--net", net, "--drain-quiet-period", "1"]
    log = (home / "up.log").open("wb")
    up = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (home / "status.json").exists():
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit(f"sluice local did not start: {(home / 'up.log').read_text()}")
            time.sleep(0.2)
        manifest = home / "faults.yaml"
        annotations = FAULT_ANNOTATIONS | ({"autoscaling.knative.dev/target-burst-capacity": "0"} if args.serve else {})
        manifest.write_text(yaml.safe_dump(service_manifest("faults", annotations)))
        done = _cli(root, home, "apply", "-f", str(manifest))
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        deadline = time.monotonic() + 60
        while sum(p["ready"] for p in _status_pods(home, "faults")) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("two pods did not become ready")
            time.sleep(0.2)
        time.sleep(2.0)  # the activator has probed both pods
        user_pid = pid_of(home, "user-container")
        activator_pid = pid_of(home, "activator")
        faults = [(args.seconds * 0.3, "user-container", sigkill(user_pid))]
        if not args.serve:
            faults.append((args.seconds * 0.6, "activator", sigkill(activator_pid)))
        url = f"http://127.0.0.1:{port}/?sleep=5"
        result = asyncio.run(paced_load(url, f"faults.default.{DOMAIN}", args.rate, args.seconds, faults))
        print(result.summary())
        for line in sorted(Counter(result.errors).items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {line[1]:4d} x {line[0]}")
    finally:
        procs = state_processes(home)
        _cli(root, home, "down")
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        up.wait(10)
        for p in procs:
            try:
                os.killpg(int(p["pid"]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
