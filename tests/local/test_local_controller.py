"""Controller + kubelet against the real embedded API, without the activator/autoscaler: the SKS
the autoscaler would create is written by the test, as are the scale changes."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sluice.local.controller import Caches, Controller
from sluice.local.kube import ALL, Kube
from sluice.local.kubeapi import EmbeddedAPIServer
from sluice.local.kubelet import Kubelet, KubeletOptions
from sluice.local.procs import AddressPool, http_get

ROOT = Path(__file__).resolve().parents[2]


async def until(predicate: Callable[[], Any], timeout: float = 15) -> Any:
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "zygote", [False, pytest.param(True, marks=pytest.mark.skipif(sys.platform != "linux", reason="Linux only"))]
)
async def test_service_to_ready_pod_endpoints_and_drained_scale_down(
    server: EmbeddedAPIServer, api: Any, tmp_path: Path, zygote: bool
) -> None:
    kube = Kube(api)
    caches = Caches(kube)
    await caches.start()
    pool = AddressPool(f"127.{random.randrange(100, 250)}")
    controller = Controller(caches, pool.system(2), "example.com")
    kubelet = Kubelet(caches, pool, KubeletOptions(log_dir=tmp_path, drain_quiet_period=0.2, zygote=zygote))
    controller.start()
    await kubelet.start_zygote()
    kubelet.start()
    try:
        await kube.create(
            ALL.SERVICES,
            "default",
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"image": "x", "command": [sys.executable, str(ROOT / "examples/autoscale.py")]}
                            ]
                        }
                    }
                },
            },
        )
        rev = await until(lambda: caches.revisions.get("default", "web-00001"))
        pa = await until(lambda: caches.pas.get("default", "web-00001"))
        assert pa["spec"]["reachability"] == ""  # pending: not routed yet
        # What the autoscaler does first (§4.3 step 1): create the SKS in Proxy mode.
        await kube.create(
            ALL.SKS,
            "default",
            {
                "metadata": {
                    "name": "web-00001",
                    "labels": pa["metadata"]["labels"],
                    "ownerReferences": [
                        {
                            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
                            "kind": "PodAutoscaler",
                            "name": "web-00001",
                            "uid": pa["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "mode": "Proxy",
                    "objectRef": pa["spec"]["scaleTargetRef"],
                    "protocolType": "http1",
                    "numActivators": 2,
                },
            },
        )

        def ready_ips() -> list[str]:
            eps = caches.endpoints.get("default", "web-00001-private") or {}
            return [a["ip"] for s in eps.get("subsets") or () for a in s.get("addresses") or ()]

        ips = await until(ready_ips)
        private = caches.endpoints.get("default", "web-00001-private")
        assert private is not None
        assert private["metadata"]["labels"]["serving.knative.dev/revisionUID"] == rev["metadata"]["uid"]
        status, body = await http_get(ips[0], 8012, "/?sleep=1", {}, 5)
        assert status == 200 and b"web-00001" in body
        # Both containers come from the zygote when there is one (the app exec'd by it), else
        # from this process.
        assert (kubelet.zygote is not None) is zygote
        parent = kubelet.zygote.child.pid if kubelet.zygote is not None and kubelet.zygote.child else os.getpid()
        assert sorted(parent_pid(pid) for _, pid in kubelet.child_pids()) == [parent, parent]
        public = caches.endpoints.get("default", "web-00001")
        assert public is not None and public["subsets"][0]["addresses"] == [{"ip": pool.system(2)}]
        sks = await until(lambda: (caches.sks.get("default", "web-00001") or {}).get("status", {}).get("serviceName"))
        assert sks == "web-00001"
        # Serve mode: the public endpoints become the pods.
        await kube.merge_patch(ALL.SKS, "default", "web-00001", {"spec": {"mode": "Serve"}})

        def public_ips() -> list[str]:
            eps = caches.endpoints.get("default", "web-00001") or {}
            return [a["ip"] for s in eps.get("subsets") or () for a in s.get("addresses") or ()]

        await until(lambda: public_ips() == ips)
        # Scale to zero through the scale subresource, as the autoscaler does (§4.2).
        await kube.merge_patch(ALL.DEPLOYMENTS, "default", "web-00001-deployment", {"spec": {"replicas": 0}}, "scale")
        await until(lambda: not caches.pods.items(), 20)
        assert not ready_ips()
        assert kubelet.child_pids() == []
    finally:
        await kubelet.stop(1.0)
        await controller.stop()
        await caches.stop()


@pytest.mark.timeout(60)
async def test_config_initial_scale_zero_starts_no_pod(server: EmbeddedAPIServer, api: Any) -> None:
    """config-autoscaler `initial-scale: 0` (with allow-zero-initial-scale) makes the first Deployment
    at zero replicas, as Knative's deploy.go does: no pod starts before the first request."""
    kube = Kube(api)
    caches = Caches(kube)
    await caches.start()
    pool = AddressPool(f"127.{random.randrange(100, 250)}")
    controller = Controller(caches, pool.system(2), "example.com", initial_scale=0)
    controller.start()
    try:
        container = {"image": "x", "command": [sys.executable, str(ROOT / "examples/autoscale.py")]}
        for name, annotations in (("cold", {}), ("warm", {"autoscaling.knative.dev/initial-scale": "2"})):
            await kube.create(
                ALL.SERVICES,
                "default",
                {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "metadata": {"name": name},
                    "spec": {
                        "template": {"metadata": {"annotations": annotations}, "spec": {"containers": [container]}}
                    },
                },
            )
        cold = await until(lambda: caches.deployments.get("default", "cold-00001-deployment"))
        warm = await until(lambda: caches.deployments.get("default", "warm-00001-deployment"))
        assert cold["spec"]["replicas"] == 0  # the config's initial scale
        assert warm["spec"]["replicas"] == 2  # the revision's annotation wins
    finally:
        await controller.stop()
        await caches.stop()
