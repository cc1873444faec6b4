"""End-to-end: real `sluice local` (embedded API, controller, kubelet, ingress), the real
activator, autoscaler and queue-proxies, and the sample app as pods (CONTRACT.md §5)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from .conftest import Local, cli, fetch, service

DOMAIN = "127.0.0.1.sslip.io"


def host(name: str) -> str:
    return f"{name}.default.{DOMAIN}"


async def until(local: Local, what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; status: {json.dumps(local.snapshot())}")


def revisions(local: Local, name: str) -> list[dict[str, Any]]:
    svc = local.service(name)
    return list(svc["revisions"]) if svc else []


def mode(local: Local, name: str) -> str:
    revs = revisions(local, name)
    return str(revs[0]["mode"]) if revs else ""


def ready(local: Local, name: str) -> bool:
    svc = local.service(name)
    return bool(svc and svc["ready"] == "True")


class Load:
    """Closed-loop load: `concurrency` workers each sending requests back to back."""

    def __init__(self, session: aiohttp.ClientSession, url: str, host: str, concurrency: int) -> None:
        self.session = session
        self.url = url
        self.host = host
        self.results: list[tuple[int, str]] = []
        self.stopping = False
        self.tasks = [asyncio.ensure_future(self._worker()) for _ in range(concurrency)]

    async def _worker(self) -> None:
        while not self.stopping:
            self.results.append(await fetch(self.session, self.url, self.host))

    async def stop(self) -> list[tuple[int, str]]:
        self.stopping = True
        await asyncio.gather(*self.tasks)
        return self.results


@pytest.mark.timeout(60)
async def test_scale_from_zero_then_back_to_zero(local: Local) -> None:
    name = "cold"
    local.apply(service(name, {"autoscaling.knative.dev/initial-scale": "0"}))
    await until(local, "service ready", lambda: ready(local, name), 20)
    assert local.ready_pods(name) == 0
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        status, body = await fetch(session, f"{local.url}/?sleep=10", host(name))
        cold = time.monotonic() - started
        assert status == 200, body
        assert "Revision: cold-00001" in body
        # The path-prefix form reaches the same service.
        status, body = await fetch(session, f"{local.url}/{name}/?sleep=1", "127.0.0.1")
        assert status == 200, body
    assert cold < 10, f"cold start took {cold:.1f}s"
    await until(local, "a ready pod", lambda: local.ready_pods(name) >= 1, 10)
    # Idle: back to zero after the 6 s window + the 3 s grace period (+ the activator probe).
    await until(local, "scale to zero", lambda: not local.pods(name), 35)


@pytest.mark.timeout(90)
async def test_burst_panics_and_scales_up_fast(local: Local) -> None:
    name = "burst"
    # With a 6 s window the default panic window (10 %) is 0.6 s: just the current 1 s bucket,
    # which early in a second can hold too little to cross the threshold while the stable
    # window already asks for more pods (scale-out without panic). 30 % gives 1.8 s.
    local.apply(
        service(
            name,
            {
                "autoscaling.knative.dev/target": "1",
                "autoscaling.knative.dev/max-scale": "4",
                "autoscaling.knative.dev/panic-window-percentage": "30",
            },
        )
    )
    await until(local, "service ready", lambda: ready(local, name), 20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        load = Load(session, f"{local.url}/?sleep=500", host(name), 12)
        try:
            await until(local, "panic mode", lambda: any(r["panic"] for r in revisions(local, name)), 20)
            await until(local, ">= 3 ready pods", lambda: local.ready_pods(name) >= 3, 30)
        finally:
            results = await load.stop()
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]


@pytest.mark.timeout(60)
async def test_queue_overflow_gives_503(local: Local) -> None:
    # One pod, containerConcurrency 1, activator out of the path (TBC 0 → SKS Serve): the
    # queue-proxy's queue holds 10 requests (§2.7), the rest get 503.
    name = "overflow"
    local.apply(
        service(
            name,
            {
                "autoscaling.knative.dev/min-scale": "1",
                "autoscaling.knative.dev/max-scale": "1",
                "autoscaling.knative.dev/target-burst-capacity": "0",
            },
            cc=1,
        )
    )
    await until(local, "service ready", lambda: ready(local, name), 20)
    await until(local, "SKS in Serve mode", lambda: mode(local, name) == "Serve", 20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(fetch(session, f"{local.url}/?sleep=1500", host(name)) for _ in range(20)))
    codes = sorted(r[0] for r in results)
    assert 503 in codes, codes
    assert 200 in codes, codes
    assert set(codes) <= {200, 503}, codes


@pytest.mark.timeout(90)
async def test_scale_down_under_steady_load_loses_nothing(local: Local) -> None:
    name = "steady"
    local.apply(
        service(
            name,
            {
                "autoscaling.knative.dev/initial-scale": "3",
                "autoscaling.knative.dev/target": "4",
                "autoscaling.knative.dev/target-burst-capacity": "0",
            },
        )
    )
    await until(local, "3 ready pods", lambda: ready(local, name) and local.ready_pods(name) >= 3, 30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        load = Load(session, f"{local.url}/?sleep=50", host(name), 2)
        try:
            await until(local, "scale down to 1 pod", lambda: len(local.pods(name)) == 1, 50)
        finally:
            results = await load.stop()
    assert len(results) > 50
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]


@pytest.mark.timeout(60)
async def test_crashed_pod_is_replaced_and_in_flight_requests_get_502(local: Local) -> None:
    name = "crash"
    local.apply(
        service(
            name,
            {
                "autoscaling.knative.dev/min-scale": "1",
                "autoscaling.knative.dev/max-scale": "1",
                "autoscaling.knative.dev/target-burst-capacity": "0",
            },
        )
    )
    await until(local, "service ready", lambda: ready(local, name) and local.ready_pods(name) == 1, 20)
    await until(local, "SKS in Serve mode", lambda: mode(local, name) == "Serve", 20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        slow = asyncio.ensure_future(fetch(session, f"{local.url}/?sleep=5000", host(name), timeout=20))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        crash_status, _ = await fetch(session, f"{local.url}/?crash=1", host(name), timeout=20)
        slow_status, slow_body = await slow
        assert time.monotonic() - started < 5, "the in-flight request hung"
        assert crash_status == 502
        assert slow_status == 502, slow_body
        await until(local, "container restarted", lambda: any(p["restarts"] >= 1 for p in local.pods(name)), 15)
        await until(local, "ready again", lambda: local.ready_pods(name) == 1, 20)
        status, body = await fetch(session, f"{local.url}/?sleep=1", host(name))
        assert status == 200, body


@pytest.mark.timeout(90)
async def test_new_revision_rolls_out_without_failed_requests(local: Local) -> None:
    name = "rollout"
    local.apply(service(name, env={"VERSION": "1"}))
    await until(local, "service ready", lambda: ready(local, name), 20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        load = Load(session, f"{local.url}/?sleep=20", host(name), 3)
        try:
            await asyncio.sleep(1)
            local.apply(service(name, env={"VERSION": "2"}))
            await until(
                local,
                "traffic on rollout-00002",
                lambda: any("rollout-00002" in body for _, body in load.results[-5:]),
                40,
            )
            await asyncio.sleep(1)
        finally:
            results = await load.stop()
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    assert any("rollout-00001" in b for _, b in results) and any("rollout-00002" in b for _, b in results)


@pytest.mark.timeout(90)
async def test_traffic_split_between_named_revisions(local: Local) -> None:
    name = "split"
    local.apply(service(name, revision="split-v1"))
    await until(local, "v1 ready", lambda: ready(local, name), 20)
    local.apply(
        service(
            name,
            env={"V": "2"},
            revision="split-v2",
            traffic=[
                {"revisionName": "split-v1", "percent": 50},
                {"latestRevision": True, "percent": 50, "tag": "canary"},
            ],
        )
    )
    await until(local, "split assigned", lambda: sum(1 for r in revisions(local, name) if r["traffic"] == 50) == 2, 30)
    async with aiohttp.ClientSession() as session:
        bodies = [(await fetch(session, f"{local.url}/", host(name)))[1] for _ in range(40)]
        tagged = await fetch(session, f"{local.url}/", f"canary-{name}.default.{DOMAIN}")
    assert any("split-v1" in b for b in bodies) and any("split-v2" in b for b in bodies), bodies
    assert tagged[0] == 200 and "split-v2" in tagged[1]


@pytest.mark.timeout(40)
async def test_command_that_exits_at_once_shows_stderr_and_backoff(local: Local) -> None:
    name = "broken"
    command = ["python3", "-c", "import sys; sys.exit('boom: missing DATABASE_URL')"]
    local.apply(service(name, {"autoscaling.knative.dev/min-scale": "1"}, command=command))

    def crashlooping() -> bool:
        pods = local.pods(name)
        return any(
            p.get("waiting") == "CrashLoopBackOff" and "boom" in (p.get("last_exit") or {}).get("output", "")
            for p in pods
        )

    await until(local, "CrashLoopBackOff with the stderr", crashlooping, 20)
    shown = cli(local.home, "status")
    assert "CrashLoopBackOff" in shown.stdout and "boom: missing DATABASE_URL" in shown.stdout, shown.stdout
    await until(local, "revision failed", lambda: any(r["ready"] == "False" for r in revisions(local, name)), 20)
    # A crash-looping service is deleted again: its pods stop, and it leaves the instance.
    assert cli(local.home, "delete", name).returncode == 0
    await until(local, "service gone", lambda: local.service(name) is None, 20)
