"""List/watch latency and memory of the embedded API server with 10,000 pods and 1,000 PAs.

Runs the server as its own process (`python -m sluice.local.kubeapi`, in memory) so its RSS
and event loop are measured alone, loads it over HTTP, then measures from a client process:

    python bench/kubeapi_bench.py [--pods 10000] [--pas 1000] [--watch-samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "sluice/local/data/knative/300-resources"
PA = "/apis/autoscaling.internal.knative.dev/v1alpha1/namespaces/default/podautoscalers"
PODS = "/api/v1/namespaces/default/pods"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pod(i: int) -> dict[str, Any]:
    rev = f"rev-{i % 1000}"
    return {
        "metadata": {
            "name": f"{rev}-deployment-{i:05d}",
            "labels": {"serving.knative.dev/revision": rev, "serving.knative.dev/configuration": "cfg", "app": rev},
        },
        "spec": {
            "nodeName": "local",
            "containers": [
                {
                    "name": "user-container",
                    "image": "example.com/app@sha256:" + "0" * 64,
                    "ports": [{"name": "user-port", "containerPort": 8080}],
                    "env": [{"name": "PORT", "value": "8080"}, {"name": "K_REVISION", "value": rev}],
                },
                {
                    "name": "queue-proxy",
                    "image": "sluice-queue-proxy",
                    "ports": [
                        {"name": "queue-port", "containerPort": 8012},
                        {"name": "http-autometric", "containerPort": 9090},
                    ],
                    "env": [
                        {"name": "SERVING_REVISION", "value": rev},
                        {"name": "CONTAINER_CONCURRENCY", "value": "0"},
                    ],
                },
            ],
        },
    }


def pa(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": f"rev-{i}",
            "annotations": {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"},
        },
        "spec": {
            "protocolType": "http1",
            "containerConcurrency": 0,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"rev-{i}-deployment"},
        },
    }


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def fmt(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50) * 1000:.1f} ms, p99 {pct(xs, 99) * 1000:.1f} ms (n={len(xs)})"


async def create_all(s: aiohttp.ClientSession, url: str, path: str, bodies: list[dict[str, Any]]) -> float:
    queue = list(reversed(bodies))
    t0 = time.perf_counter()

    async def worker() -> None:
        while queue:
            body = queue.pop()
            async with s.post(url + path, json=body) as r:
                assert r.status == 201, await r.text()
                await r.read()

    await asyncio.gather(*(worker() for _ in range(16)))
    return time.perf_counter() - t0


async def timed_get(s: aiohttp.ClientSession, url: str, n: int = 5) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        async with s.get(url) as r:
            data = await r.read()
        times.append(time.perf_counter() - t0)
        size = len(data)
    return times, size


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    kc = tmp / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice.local.kubeapi",
        "--port",
        "0",
        "--insecure-http",
        "--kubeconfig",
        str(kc),
        "--crd",
        str(CRD_DIR),
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if kc.exists():
                break
            await asyncio.sleep(0.05)
        cfg = yaml.safe_load(kc.read_text())
        url = cfg["clusters"][0]["cluster"]["server"]
        headers = {"Authorization": f"Bearer {cfg['users'][0]['user']['token']}"}
        out: dict[str, Any] = {"rss_idle_mib": round(rss_mib(proc.pid), 1)}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as s:
            t = await create_all(s, url, PODS, [pod(i) for i in range(args.pods)])
            out["create_pods_per_s"] = round(args.pods / t)
            t = await create_all(s, url, PA, [pa(i) for i in range(args.pas)])
            out["create_pas_per_s"] = round(args.pas / t)
            out["rss_loaded_mib"] = round(rss_mib(proc.pid), 1)

            times, size = await timed_get(s, url + PODS)
            out["list_10k_pods"] = f"{fmt(times)}, {size / 2**20:.1f} MiB"
            times, _ = await timed_get(s, url + PODS + "?labelSelector=serving.knative.dev/revision%3Drev-7", 20)
            out["list_pods_by_revision_label"] = fmt(times)
            times, _ = await timed_get(s, url + PODS + "?limit=500", 20)
            out["list_pods_page_500"] = fmt(times)
            times, size = await timed_get(s, url + PA)
            out["list_1k_pas"] = f"{fmt(times)}, {size / 2**20:.2f} MiB"
            times, _ = await timed_get(s, url + PA + "/rev-5", 50)
            out["get_pa"] = fmt(times)

            # Initial sync of a watch from "0": all 10k pods as ADDED events.
            t0 = time.perf_counter()
            n = 0
            async with s.get(url + PODS + "?watch=true&resourceVersion=0&timeoutSeconds=60") as r:
                while n < args.pods:
                    await r.content.readline()
                    n += 1
            out["watch_initial_10k_pods_s"] = round(time.perf_counter() - t0, 3)
            out["rss_after_lists_mib"] = round(rss_mib(proc.pid), 1)

            # Write -> event latency, with watchers on the pods and PAs.
            lat: list[float] = []
            async with s.get(url + PA + "?watch=true&resourceVersion=" + "0&timeoutSeconds=120") as w1:
                for _ in range(args.pas):  # drain the initial ADDED events
                    await w1.content.readline()
                for i in range(args.watch_samples):
                    patch = {"status": {"serviceName": "s", "metricsServiceName": "m", "desiredScale": i}}
                    t0 = time.perf_counter()
                    async with s.patch(
                        url + PA + f"/rev-{i % args.pas}/status",
                        data=json.dumps(patch),
                        headers={"Content-Type": "application/merge-patch+json"},
                    ) as r:
                        assert r.status == 200, await r.text()
                        await r.read()
                    line = await w1.content.readline()
                    lat.append(time.perf_counter() - t0)
                    assert json.loads(line)["type"] == "MODIFIED"
            out["pa_status_patch_to_watch_event"] = fmt(lat)
            out["rss_final_mib"] = round(rss_mib(proc.pid), 1)
        return out
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=10_000)
    p.add_argument("--pas", type=int, default=1_000)
    p.add_argument("--watch-samples", type=int, default=200)
    args = p.parse_args()
    ssl.create_default_context()  # import side effect kept out of the timings
    res = asyncio.run(run(args))
    print(json.dumps({"pods": args.pods, "pas": args.pas, "cpu": os.cpu_count(), **res}, indent=2))


if __name__ == "__main__":
    main()
