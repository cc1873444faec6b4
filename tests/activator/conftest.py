"""Fixtures for activator tests: the embedded Kubernetes API (the activator reads it
through kubernetes-asyncio, exactly as against a real cluster), the autoscaler's
real websocket StatServer as the peer, fake queue-proxies on loopback addresses,
and an in-process `ActivatorProcess` wired like `python -m activator`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from activator.__main__ import ActivatorProcess
from activator.config import ActivatorConfig, NetworkConfig, ObservabilityConfig
from autoscaler.statserver import StatServer
from sluice.http.server import HttpExchange, HttpServer
from sluice.local.kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig
from sluice.wire import Stat
from tests.support import ROOT

CRD_DIR = ROOT.parent / "shared/knative/config/300-resources"
NS = "default"


# ---- Kubernetes objects (shapes as the controller writes them, CONTRACT.md §0) ----------


def revision_body(name: str, cc: int = 0, timeout: int | None = 300, **spec: Any) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "containerConcurrency": cc,
        "containers": [{"name": "user-container", "image": "example", "ports": [{"containerPort": 8080}]}],
    }
    if timeout is not None:
        body_spec["timeoutSeconds"] = timeout
    body_spec.update(spec)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "labels": {"serving.knative.dev/configuration": "hello", "serving.knative.dev/service": "hello"},
        },
        "spec": body_spec,
    }


def private_endpoints_body(
    rev: str,
    ready: list[tuple[str, int]],
    not_ready: list[tuple[str, int]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """`<rev>-private` Endpoints: one subset per (ip, port), port named `http`."""
    subsets: list[dict[str, Any]] = []
    for ip, port in ready:
        subsets.append({"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": port}]})
    for ip, port in not_ready:
        subsets.append({"notReadyAddresses": [{"ip": ip}], "ports": [{"name": "http", "port": port}]})
    return {
        "metadata": {
            "name": f"{rev}-private",
            "labels": {
                "serving.knative.dev/revision": rev,
                "serving.knative.dev/revisionUID": "uid-" + rev,
                "networking.internal.knative.dev/serviceType": "Private",
            },
        },
        "subsets": subsets,
    }


def public_endpoints_body(rev: str, activator_ips: list[str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": rev,
            "labels": {
                "serving.knative.dev/revision": rev,
                "networking.internal.knative.dev/serviceType": "Public",
            },
        },
        "subsets": [{"addresses": [{"ip": ip} for ip in activator_ips], "ports": [{"name": "http", "port": 8012}]}],
    }


class Kube:
    """Writes objects into the embedded API through kubernetes-asyncio (dicts, not models)."""

    def __init__(self, server: EmbeddedAPIServer, kubeconfig: Path, api: Any) -> None:
        from kubernetes_asyncio import client

        self.server = server
        self.kubeconfig = kubeconfig
        self.api = api
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    async def create_revision(self, name: str, cc: int = 0, **kw: Any) -> None:
        await self.custom.create_namespaced_custom_object(
            "serving.knative.dev", "v1", NS, "revisions", revision_body(name, cc, **kw)
        )

    async def delete_revision(self, name: str) -> None:
        await self.custom.delete_namespaced_custom_object("serving.knative.dev", "v1", NS, "revisions", name)

    async def put_endpoints(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        await self.core.replace_namespaced_endpoints(name, NS, body)

    async def set_private(
        self, rev: str, ready: list[tuple[str, int]], not_ready: list[tuple[str, int]] | None = None
    ) -> None:
        await self.put_endpoints(private_endpoints_body(rev, ready, not_ready or []))

    async def create_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with contextlib.suppress(Exception):
            await self.core.create_namespace({"metadata": {"name": namespace}})
        await self.core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": data})


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Kube]:
    srv = EmbeddedAPIServer(port=0, crd_paths=[CRD_DIR], bookmark_interval=1.0)
    await srv.start()
    kubeconfig = srv.write_kubeconfig(tmp_path / "kubeconfig")
    api = await kube_client_from_kubeconfig(kubeconfig)
    try:
        yield Kube(srv, kubeconfig, api)
    finally:
        await api.close()
        await srv.stop()


# ---- the autoscaler end of the websocket -------------------------------------------------


@dataclass
class Received:
    stats: list[tuple[float, str, Stat]] = field(default_factory=list)

    def for_key(self, key: str) -> list[Stat]:
        return [s for _, k, s in self.stats if k == key]


@dataclass
class Autoscaler:
    server: StatServer
    received: Received

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/"


@pytest.fixture
async def autoscaler() -> AsyncIterator[Autoscaler]:
    received = Received()

    def sink(key: str, stat: Stat, source: str) -> None:
        received.stats.append((time.monotonic(), key, stat))

    server = StatServer(sink)
    await server.start("127.0.0.1", 0)
    try:
        yield Autoscaler(server, received)
    finally:
        await server.shutdown(budget=1.0)


# ---- fake queue-proxies --------------------------------------------------------------------


class FakeQueueProxy:
    """Answers the activator's probe like a QP (§1.3: 200 `queue` when ready, 503
    when not) and echoes each request's line and headers as JSON. `hold` keeps
    requests open until released, to observe concurrency per pod."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.ip = ip
        self.ready = True
        self.hold = False
        self.probes = 0
        self.first_ready_probe_at: float | None = None
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.held: list[HttpExchange] = []
        self.max_concurrent = 0
        self.server = HttpServer(self)
        self.port = 0

    async def start(self, port: int = 0) -> FakeQueueProxy:
        await self.server.listen(self.ip, port)
        self.port = self.server.ports[0]
        return self

    @property
    def dest(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def __call__(self, ex: HttpExchange) -> None:
        ua = ex.header(b"user-agent") or b""
        if ua.startswith(b"Knative-Activator-Probe"):
            self.probes += 1
            if ex.header(b"k-network-probe") != b"queue":
                ex.respond_error(400, "unexpected probe header value")
            elif self.ready:
                if self.first_ready_probe_at is None:
                    self.first_ready_probe_at = time.monotonic()
                ex.respond_text(200, b"queue")
            else:
                ex.respond_text(503, b"")
            return
        self.arrivals.append(time.monotonic())
        record = {
            "method": ex.method.decode(),
            "url": ex.url.decode(),
            "headers": [[name.decode(), value.decode("latin-1")] for _, name, value in ex.headers],
        }
        self.requests.append(record)
        if self.hold:
            self.held.append(ex)
            self.max_concurrent = max(self.max_concurrent, len(self.held))
            ex.on_abort = lambda: self.held.remove(ex) if ex in self.held else None
            return
        ex.respond_text(200, json.dumps(record).encode(), content_type=b"application/json")

    def release_all(self) -> None:
        held, self.held = self.held, []
        for ex in held:
            ex.respond_text(200, b"released")

    def release_one(self) -> None:
        if self.held:
            self.held.pop(0).respond_text(200, b"released")

    async def kill(self) -> None:
        """The pod dies: listener gone, every open connection reset."""
        self.server.stop_accepting()
        for conn in list(self.server.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.held = []

    async def stop(self) -> None:
        await self.kill()


@pytest.fixture
async def make_qp() -> AsyncIterator[Callable[..., Awaitable[FakeQueueProxy]]]:
    qps: list[FakeQueueProxy] = []

    async def make(ip: str = "127.0.0.1", ready: bool = True) -> FakeQueueProxy:
        qp = FakeQueueProxy(ip)
        qp.ready = ready
        await qp.start()
        qps.append(qp)
        return qp

    yield make
    for qp in qps:
        await qp.stop()


# ---- the activator ---------------------------------------------------------------------------


def activator_env(kube: Kube, autoscaler_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "POD_NAME": "activator-abc",
        "POD_IP": "127.0.0.1",
        "SYSTEM_NAMESPACE": "knative-serving",
        "CLUSTER_DOMAIN": "cluster.local",
        "SLUICE_BIND_HOST": "127.0.0.1",
        "SLUICE_HTTP1_PORT": "0",
        "SLUICE_H2C_PORT": "0",
        "SLUICE_METRICS_PORT": "0",
        "SLUICE_KUBECONFIG": str(kube.kubeconfig),
        "SLUICE_AUTOSCALER_URL": autoscaler_url,
        "SLUICE_DRAIN_SLEEP": "0",
    }
    env.update(overrides)
    return env


MakeActivator = Callable[..., Awaitable[ActivatorProcess]]


@pytest.fixture
async def make_activator(kube: Kube, autoscaler: Autoscaler) -> AsyncIterator[MakeActivator]:
    procs: list[tuple[ActivatorProcess, Any]] = []

    async def make(
        network: NetworkConfig | None = None,
        observability: ObservabilityConfig | None = None,
        wait_connected: bool = True,
        debug_address: tuple[str, int] | None = None,
        **env: str,
    ) -> ActivatorProcess:
        cfg = ActivatorConfig.from_env(activator_env(kube, autoscaler.url, **env))
        api = await kube_client_from_kubeconfig(kube.kubeconfig)
        proc = ActivatorProcess(cfg, api, network, observability, debug_address)
        procs.append((proc, api))
        await proc.start()
        if wait_connected:
            await asyncio.wait_for(proc.reporter.connected_event.wait(), 5)
        return proc

    yield make
    for proc, api in procs:
        await proc.close()
        await api.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
