"""`python -m autoscaler` stopped with SIGSTOP and resumed (issue 13): its deciders, scrapes and
lease renewals go on, so a burst that arrives after the stall still scales the revision out."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from autoscaler.leaderelection import LEADER_ELECTION_CONFIG_NAME
from tests.autoscaler.kpa_fixtures import REPO_ROOT, SYSTEM_NS, Cluster, free_port, until
from tests.autoscaler.kpa_fixtures import cluster as cluster

STALL = 2.5


async def test_autoscaler_decides_again_after_a_stall(cluster: Cluster) -> None:
    await cluster.set_config(
        LEADER_ELECTION_CONFIG_NAME, {"lease-duration": "2s", "renew-deadline": "1500ms", "retry-period": "250ms"}
    )
    env = dict(os.environ)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(
        {
            "POD_NAME": "autoscaler-stall",
            "POD_IP": "127.0.0.1",
            "SYSTEM_NAMESPACE": SYSTEM_NS,
            "SLUICE_KUBECONFIG": str(cluster.kubeconfig),
            "SLUICE_STAT_SERVER_HOST": "127.0.0.1",
            "SLUICE_STAT_SERVER_PORT": str(free_port()),
            "SLUICE_SCRAPE_PORT": str(cluster.scrape_port),
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", cwd=REPO_ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        # cc 10, target 70 % -> 7 per pod; one idle pod.
        await cluster.create_revision(
            "stall", annotations={"autoscaling.knative.dev/window": "6s"}, replicas=1, container_concurrency=10
        )
        pod = await cluster.add_pod("stall", 0)

        async def serving() -> bool:
            status = (await cluster.pa("stall")).get("status") or {}
            active = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Active")
            return active == "True" and 0 <= status.get("desiredScale", -1) <= 1

        await until(serving, timeout=20, what="a first decision")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        pod.concurrency = 40.0  # ceil(40 / 7) = 6 pods

        async def scaled_up() -> bool:
            return await cluster.replicas("stall") >= 6

        await until(scaled_up, timeout=10, what="scale-up decided after the stall")
        assert time.monotonic() - resumed < 10
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "AttributeError" not in err and "Traceback" not in err, err[-3000:]
