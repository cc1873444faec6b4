"""`python -m autoscaler` as a real process against the embedded Kubernetes API (CONTRACT.md §4.1,
§4.9, §4.10): env validation, kubelet probe, JSON logs, leases, SIGTERM (1012 close, lease release)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import aiohttp

from autoscaler.kube import call_obj
from autoscaler.leaderelection import LEADER_ELECTION_CONFIG_NAME

from .kpa_fixtures import REPO_ROOT, SYSTEM_NS, Cluster, cluster, free_port, until

__all__ = ["cluster"]


def test_missing_env_names_every_key() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_IP", "SYSTEM_NAMESPACE")}
    env["SLUICE_STAT_SERVER_PORT"] = "not-a-port"
    out = subprocess.run(
        [sys.executable, "-m", "autoscaler"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    for key in ("POD_NAME", "POD_IP", "SYSTEM_NAMESPACE", "SLUICE_STAT_SERVER_PORT"):
        assert key in out.stderr


async def test_process_runs_elects_and_shuts_down_cleanly(cluster: Cluster) -> None:
    await cluster.set_config(
        LEADER_ELECTION_CONFIG_NAME, {"lease-duration": "2s", "renew-deadline": "1500ms", "retry-period": "250ms"}
    )
    port = free_port()
    env = dict(os.environ)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(
        {
            "POD_NAME": "autoscaler-main",
            "POD_IP": "127.0.0.1",
            "SYSTEM_NAMESPACE": SYSTEM_NS,
            "SLUICE_KUBECONFIG": str(cluster.kubeconfig),
            "SLUICE_STAT_SERVER_HOST": "127.0.0.1",
            "SLUICE_STAT_SERVER_PORT": str(port),
            "SLUICE_SCRAPE_PORT": str(cluster.scrape_port),
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", cwd=REPO_ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def probe_ok() -> bool:
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/", headers={"User-Agent": "kube-probe/1.29"}
                    ) as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(probe_ok, timeout=15, what="kubelet probe 200")

            async def leased() -> bool:
                try:
                    lease = await call_obj(
                        cluster.api_coordination.read_namespaced_lease, "autoscaler-bucket-00-of-01", SYSTEM_NS
                    )
                except Exception:
                    return False
                return bool(lease["spec"].get("holderIdentity") == "autoscaler-main_127.0.0.1")

            await until(leased, timeout=5, what="lease acquired")
            await cluster.create_revision("proc")

            async def has_sks() -> bool:
                return await cluster.sks("proc") is not None

            await until(has_sks, timeout=5, what="SKS from the process")

            ws = await session.ws_connect(f"http://127.0.0.1:{port}/")
            proc.send_signal(signal.SIGTERM)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1012
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        lease = await call_obj(cluster.api_coordination.read_namespaced_lease, "autoscaler-bucket-00-of-01", SYSTEM_NS)
        assert lease["spec"]["holderIdentity"] in ("", None)  # released on SIGTERM
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    lines = (await proc.stderr.read()).decode().splitlines()
    entries: list[dict[str, Any]] = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and len(entries) == len([x for x in lines if x.strip()]), lines[:5]
    assert all({"severity", "timestamp", "logger", "message"} <= e.keys() for e in entries)
    assert any("acquired lease" in e["message"] for e in entries)
    assert all(e.get("knative.dev/pod") == "autoscaler-main" for e in entries)
