"""`sluice.kube.rest` makes the requests kubernetes-asyncio's generated methods make (path,
quoting, query names, headers, auth), checked against what a server receives and against the
generated method called the same way."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sluice.kube import new_api_client
from sluice.kube.rawjson import read_body
from sluice.kube.rest import AppsV1, CoreV1, CustomObjects


class Recorder:
    """An HTTP server that records each request head and body and answers `{}`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        headers: dict[str, str] = {}
        while (raw := await reader.readline()).strip():
            name, _, value = raw.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((line, headers, body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()


async def _client(tmp_path: Path, port: int) -> Any:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    (tmp_path / "kc").write_text(json.dumps(config))
    return await new_api_client(tmp_path / "kc")


async def test_requests_match_the_generated_methods(tmp_path: Path) -> None:
    from kubernetes_asyncio.client.api.apps_v1_api import AppsV1Api
    from kubernetes_asyncio.client.api.core_v1_api import CoreV1Api
    from kubernetes_asyncio.client.api.custom_objects_api import CustomObjectsApi

    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    api = await _client(tmp_path, server.sockets[0].getsockname()[1])
    patch = [{"op": "add", "path": "/spec/replicas", "value": 3}]
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("list_pod_for_all_namespaces", (), {"label_selector": "a=b", "watch": True, "resource_version": "7"}),
        ("list_namespaced_secret", ("knative-serving",), {"field_selector": "metadata.name=x"}),
        ("read_namespaced_config_map", ("config-network", "knative-serving"), {}),
        ("create_namespaced_service", ("ns", {"metadata": {"name": "s"}}), {}),
        ("list_cluster_custom_object", ("serving.knative.dev", "v1", "revisions"), {"timeout_seconds": 5}),
        ("replace_namespaced_custom_object_status", ("g", "v1", "ns", "pas", "n a", {"a": 1}), {}),
        ("patch_namespaced_custom_object_scale", ("g", "v1", "ns", "things", "n", patch), {}),
        ("patch_namespaced_deployment_scale", ("d", "ns", patch), {}),
    ]
    try:
        ours = {"core": CoreV1(api), "custom": CustomObjects(api), "apps": AppsV1(api)}
        generated = {"core": CoreV1Api(api), "custom": CustomObjectsApi(api), "apps": AppsV1Api(api)}
        for name, args, kwargs in calls:
            group = next(g for g, obj in ours.items() if hasattr(obj, name))
            for impl in (ours[group], generated[group]):
                await read_body(await getattr(impl, name)(*args, _preload_content=False, **kwargs))
        core = CoreV1(api)
        with pytest.raises(ValueError, match="_preload_content=False"):
            await core.read_namespaced_config_map("a", "b")
        with pytest.raises(TypeError, match="pretty"):
            await core.read_namespaced_config_map("a", "b", _preload_content=False, pretty="true")
    finally:
        await api.close()
        server.close()
    assert len(rec.requests) == 2 * len(calls)
    keep = ("authorization", "content-type", "accept")
    for i in range(len(calls)):
        (line_a, head_a, body_a), (line_b, head_b, body_b) = rec.requests[2 * i], rec.requests[2 * i + 1]
        assert line_a == line_b, calls[i][0]
        assert {k: head_a.get(k) for k in keep} == {k: head_b.get(k) for k in keep}, calls[i][0]
        assert json.loads(body_a or b"null") == json.loads(body_b or b"null"), calls[i][0]
    assert rec.requests[0][0] == "GET /api/v1/pods?labelSelector=a%3Db&resourceVersion=7&watch=True HTTP/1.1"
    assert rec.requests[0][1]["authorization"] == "Bearer secret-token"
    assert rec.requests[-1][1]["content-type"] == "application/json-patch+json"
