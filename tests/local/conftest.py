"""Fixtures: a real embedded API server on an ephemeral 127.0.0.1 port, and kubernetes-asyncio
clients configured from the kubeconfig it writes (the same path production code takes)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as _client
from kubernetes_asyncio import watch as _watch
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.local.kubeapi import EmbeddedAPIServer, default_crd_dir, kube_client_from_kubeconfig

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = default_crd_dir()  # the packaged copies (tests/package/test_data.py checks them)

# The generated client is typed for model objects; the tests send plain dicts, as Sluice's own
# code does, so they go through these untyped aliases.
client: Any = _client
watch: Any = _watch


def body_of(e: ApiException) -> dict[str, Any]:
    assert e.body is not None
    out: dict[str, Any] = json.loads(e.body)
    return out


PA_GROUP, PA_VERSION, PA_PLURAL = "autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers"


def pa_body(name: str, **spec: Any) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "protocolType": "http1",
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-deployment"},
    }
    body_spec.update(spec)
    return {
        "apiVersion": f"{PA_GROUP}/{PA_VERSION}",
        "kind": "PodAutoscaler",
        "metadata": {"name": name, "annotations": {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}},
        "spec": body_spec,
    }


def pod_body(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "spec": {"containers": [{"name": "user-container", "image": "example"}]},
    }


def deployment_body(name: str, replicas: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name}, "spec": spec}


def client_ssl(server: EmbeddedAPIServer) -> ssl.SSLContext:
    """What a client builds from the kubeconfig's certificate-authority-data."""
    assert server.ca_cert is not None
    return ssl.create_default_context(cadata=server.ca_cert.decode())


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedAPIServer]:
    srv = EmbeddedAPIServer(port=0, crd_paths=[CRD_DIR], history_size=50, bookmark_interval=0.2)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def kubeconfig(server: EmbeddedAPIServer, tmp_path: Path) -> Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[Any]:
    client = await kube_client_from_kubeconfig(kubeconfig)
    try:
        yield client
    finally:
        await client.close()
