"""A small cluster for the autoscaler's integration tests: the embedded Kubernetes API over real
sockets, a stand-in for the SKS controller and the kubelet, pods whose "queue-proxy" is a tiny
aiohttp server on `<pod IP>:<scrape port>` answering real `Stat` protobuf, and a fake activator
answering the KPA's probe. The autoscaler under test only ever sees the API and these sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client as _client
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.app import AutoscalerApp, Options
from autoscaler.kube import call_obj
from autoscaler.leaderelection import LeaderElectionConfig
from sluice.local.kubeapi import EmbeddedAPIServer, default_crd_dir, kube_client_from_kubeconfig
from sluice.wire import Stat, encode_stat

client: Any = _client

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = default_crd_dir()
SYSTEM_NS = "knative-serving"
NS = "default"
GROUP, VERSION = "autoscaling.internal.knative.dev", "v1alpha1"
SKS_GROUP = "networking.internal.knative.dev"
KPA = "kpa.autoscaling.knative.dev"


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def random_loopback() -> str:
    """A 127/8 address unlikely to be used by a parallel test run (all of 127/8 reaches lo)."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


class StatPod:
    """A pod's stats endpoint: GET /metrics -> `Stat` protobuf, as the queue-proxy serves it."""

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name = name
        self.ip = ip
        self.port = port
        self.concurrency = 0.0
        self.answering = True
        self.scrapes = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if not self.answering:
            await asyncio.sleep(10)  # a hung pod: the scraper's 3 s timeout fires
        stat = Stat(
            pod_name=self.name,
            average_concurrent_requests=self.concurrency,
            request_count=self.concurrency,
            process_uptime=100.0,
        )
        return web.Response(body=encode_stat(stat), content_type="application/protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class FakeActivator:
    """Answers `K-Network-Probe: activator` with 200 `activator`, as the activator does (§1.3)."""

    def __init__(self) -> None:
        self.in_path = True
        self.probes = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.probes += 1
        assert request.headers.get("K-Network-Probe") == "activator"
        assert request.headers.get("User-Agent") == "Knative-Autoscaling-Probe"
        assert request.path == "//healthz"  # Knative's double slash
        if self.in_path:
            return web.Response(text="activator")
        return web.Response(status=400, text="unexpected probe header value: activator\n")  # a QP

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Cluster:
    server: EmbeddedAPIServer
    api: Any
    kubeconfig: Path
    scrape_port: int
    activator: FakeActivator
    pods: dict[str, StatPod] = field(default_factory=dict)
    apps: list[AutoscalerApp] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    @property
    def apps_api(self) -> Any:
        return client.AppsV1Api(self.api)

    @property
    def api_coordination(self) -> Any:
        return client.CoordinationV1Api(self.api)

    @property
    def api_discovery(self) -> Any:
        return client.DiscoveryV1Api(self.api)

    async def start_autoscaler(self, name: str = "autoscaler-0", **overrides: Any) -> AutoscalerApp:
        api = await kube_client_from_kubeconfig(self.kubeconfig)
        opts: dict[str, Any] = {
            "system_namespace": SYSTEM_NS,
            "pod_name": name,
            "pod_ip": "127.0.0.1",
            "stat_host": "127.0.0.1",
            "stat_port": 0,
            "scrape_port": self.scrape_port,
            "activator_probe_url": f"http://127.0.0.1:{self.activator.port}//healthz",
            "leader_election": False,
        }
        opts.update(overrides)
        app = AutoscalerApp(api, Options(**opts))
        app.api_client_to_close = api  # type: ignore[attr-defined]
        await app.start()
        self.apps.append(app)
        return app

    async def stop_autoscaler(self, app: AutoscalerApp) -> None:
        await app.stop()
        await app.api_client_to_close.close()  # type: ignore[attr-defined]
        self.apps.remove(app)

    async def set_config(self, name: str, data: dict[str, str]) -> None:
        body = {"metadata": {"name": name, "namespace": SYSTEM_NS}, "data": data}
        try:
            await self.core.create_namespaced_config_map(SYSTEM_NS, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            await self.core.replace_namespaced_config_map(name, SYSTEM_NS, body)

    async def create_revision(
        self,
        name: str,
        annotations: dict[str, str] | None = None,
        replicas: int = 1,
        container_concurrency: int = 0,
    ) -> dict[str, Any]:
        """The controller's part: the Deployment `<rev>-deployment` and the PodAutoscaler `<rev>`."""
        labels = {"serving.knative.dev/revision": name, "serving.knative.dev/revisionUID": f"uid-{name}"}
        await self.apps_api.create_namespaced_deployment(
            NS,
            {
                "metadata": {"name": f"{name}-deployment", "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"serving.knative.dev/revision": name}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "user-container", "image": "x"}]},
                    },
                },
            },
        )
        ann = {"autoscaling.knative.dev/class": KPA, "autoscaling.knative.dev/metric": "concurrency"}
        ann.update(annotations or {})
        pa = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PodAutoscaler",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": ann},
            "spec": {
                "containerConcurrency": container_concurrency,
                "protocolType": "http1",
                "reachability": "Reachable",
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-deployment"},
            },
        }
        created: dict[str, Any] = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, NS, "podautoscalers", pa
        )
        return created

    async def pa(self, name: str) -> dict[str, Any]:
        return await call_obj(self.custom.get_namespaced_custom_object, GROUP, VERSION, NS, "podautoscalers", name)

    async def sks(self, name: str) -> dict[str, Any] | None:
        try:
            return await call_obj(
                self.custom.get_namespaced_custom_object, SKS_GROUP, VERSION, NS, "serverlessservices", name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def metric(self, name: str) -> dict[str, Any] | None:
        try:
            return await call_obj(self.custom.get_namespaced_custom_object, GROUP, VERSION, NS, "metrics", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def replicas(self, name: str) -> int:
        dep = await call_obj(self.apps_api.read_namespaced_deployment, f"{name}-deployment", NS)
        return int(dep["spec"].get("replicas", 1))

    async def set_replicas(self, name: str, n: int) -> None:
        await self.apps_api.patch_namespaced_deployment_scale(
            f"{name}-deployment", NS, [{"op": "add", "path": "/spec/replicas", "value": n}]
        )

    async def add_pod(self, revision: str, index: int, concurrency: float = 0.0, ready: bool = True) -> StatPod:
        """A Running pod of `revision` whose stats endpoint is a real socket on its own IP."""
        name = f"{revision}-pod-{index}"
        pod = StatPod(name, random_loopback(), self.scrape_port)
        pod.concurrency = concurrency
        await pod.start()
        self.pods[name] = pod
        labels = {"serving.knative.dev/revision": revision, "serving.knative.dev/revisionUID": f"uid-{revision}"}
        await self.core.create_namespaced_pod(
            NS,
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {"containers": [{"name": "user-container", "image": "x"}]},
            },
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
        await self.core.patch_namespaced_pod_status(
            name,
            NS,
            {
                "status": {
                    "phase": "Running",
                    "podIP": pod.ip,
                    "startTime": now,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                }
            },
        )
        return pod

    async def remove_pod(self, name: str) -> None:
        await self.core.delete_namespaced_pod(name, NS)
        pod = self.pods.pop(name, None)
        if pod is not None:
            await pod.stop()

    async def sks_controller(self) -> None:
        """Stands in for the SKS reconciler of `cmd/controller`: publishes the service names and
        marks Ready; ActivatorEndpointsPopulated follows the mode (True in Proxy)."""
        custom = self.custom
        while True:
            body = await call_obj(custom.list_namespaced_custom_object, SKS_GROUP, VERSION, NS, "serverlessservices")
            for sks in body.get("items", []):
                name = sks["metadata"]["name"]
                mode = sks["spec"].get("mode")
                old = sks.get("status") or {}
                old_conds = {c["type"]: c for c in old.get("conditions") or []}
                ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                want_aep = "True" if mode == "Proxy" else "False"
                aep = old_conds.get("ActivatorEndpointsPopulated")
                if aep is None or aep["status"] != want_aep:
                    aep = {"type": "ActivatorEndpointsPopulated", "status": want_aep, "lastTransitionTime": ts}
                ready = old_conds.get("Ready") or {"type": "Ready", "status": "True", "lastTransitionTime": ts}
                status = {
                    "observedGeneration": sks["metadata"].get("generation"),
                    "serviceName": name,
                    "privateServiceName": f"{name}-private",
                    "conditions": sorted([aep, ready], key=lambda c: c["type"]),
                }
                if status != old:
                    sks["status"] = status
                    with contextlib.suppress(ApiException):
                        await custom.replace_namespaced_custom_object_status(
                            SKS_GROUP, VERSION, NS, "serverlessservices", name, sks
                        )
            await asyncio.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    server = EmbeddedAPIServer(port=0, crd_paths=[CRD_DIR], bookmark_interval=1.0)
    await server.start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = await kube_client_from_kubeconfig(kubeconfig)
    await client.CoreV1Api(api).create_namespace({"metadata": {"name": SYSTEM_NS}})
    activator = FakeActivator()
    await activator.start()
    c = Cluster(server, api, kubeconfig, free_port(), activator)
    c.tasks.append(asyncio.create_task(c.sks_controller()))
    try:
        yield c
    finally:
        for app in list(c.apps):
            await c.stop_autoscaler(app)
        for t in c.tasks:
            t.cancel()
        for t in c.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for pod in c.pods.values():
            await pod.stop()
        await activator.stop()
        await api.close()
        await server.stop()


FAST_LEASES = LeaderElectionConfig(buckets=1, lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)
