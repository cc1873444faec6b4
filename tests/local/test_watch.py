"""Watch: initial state, resume from a resourceVersion, 410 Gone, bookmarks, timeouts, selectors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.local.kubeapi import EmbeddedAPIServer

from .conftest import client, client_ssl, pod_body, watch


async def collect(stream: Any, n: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    async def run() -> None:
        async for ev in stream:
            name = ev["raw_object"]["metadata"].get("name", "")
            out.append((ev["type"], name))
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_watch_replays_state_then_streams_changes(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    w = watch.Watch()
    stream = w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=10)
    first = await collect(stream, 1)
    assert first == [("ADDED", "before")]
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    await v1.patch_namespaced_config_map("after", "default", {"data": {"x": "1"}})
    await v1.delete_namespaced_config_map("after", "default")
    rest = await collect(stream, 3)
    assert rest == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    w.stop()
    await w.close()


async def test_watch_resumes_from_resource_version(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    listed = await v1.list_namespaced_config_map("default")
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    w = watch.Watch()
    stream = w.stream(
        v1.list_namespaced_config_map, "default", resource_version=listed.metadata.resource_version, timeout_seconds=10
    )
    assert await collect(stream, 2) == [("ADDED", "a"), ("ADDED", "b")]
    await w.close()


async def test_watch_older_than_history_is_410_gone(api: Any, server: EmbeddedAPIServer) -> None:
    v1 = client.CoreV1Api(api)
    start = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    for i in range(60):  # the fixture keeps 50 events
        await v1.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    w = watch.Watch()
    with pytest.raises(ApiException) as ei:
        await collect(w.stream(v1.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=5), 1)
    assert ei.value.status == 410
    assert "too old resource version" in str(ei.value.reason)
    await w.close()
    # A version still inside the window resumes fine.
    recent = str(int((await v1.list_namespaced_config_map("default")).metadata.resource_version) - 5)
    w2 = watch.Watch()
    got = await collect(
        w2.stream(v1.list_namespaced_config_map, "default", resource_version=recent, timeout_seconds=5), 5
    )
    assert [t for t, _ in got] == ["ADDED"] * 5
    await w2.close()


async def test_watch_410_is_an_error_event_on_a_200_stream(server: EmbeddedAPIServer) -> None:
    # Raw check of the wire shape the watch cache uses (clients depend on it to relist).
    assert server.ops is not None
    for i in range(60):
        server.ops.create(server.registry.lookup("", "v1", "configmaps"), "default", {"metadata": {"name": f"cm-{i}"}})
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{server.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1",
            headers=headers,
            ssl=client_ssl(server),
        ) as r,
    ):
        assert r.status == 200
        line = await r.content.readline()
    import json

    ev = json.loads(line)
    assert ev["type"] == "ERROR"
    assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"


async def test_watch_bookmarks_and_timeout(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    w = watch.Watch()
    types: list[str] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async for ev in w.stream(
        v1.list_namespaced_config_map, "default", allow_watch_bookmarks=True, resource_version="0", timeout_seconds=1
    ):
        types.append(ev["type"])
    elapsed = loop.time() - t0
    assert "BOOKMARK" in types  # the fixture's bookmark interval is 0.2 s
    assert 0.9 <= elapsed < 3.0
    assert w.resource_version is not None


async def test_filtered_watch_sees_objects_enter_and_leave_the_selector(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    created = await v1.create_namespaced_pod("default", pod_body("p", {"ready": "no"}))
    w = watch.Watch()
    # The stream opens lazily, so resume from the create's version to see every later change.
    stream = w.stream(
        v1.list_namespaced_pod,
        "default",
        label_selector="ready=yes",
        resource_version=created.metadata.resource_version,
        timeout_seconds=10,
    )
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"ready": "yes"}}})
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"annotations": {"a": "b"}}})
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"ready": "no"}}})
    assert await collect(stream, 3) == [("ADDED", "p"), ("MODIFIED", "p"), ("DELETED", "p")]
    await w.close()


async def test_watch_single_object_by_name(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    w = watch.Watch()
    stream = w.stream(v1.list_namespaced_config_map, "default", field_selector="metadata.name=b", timeout_seconds=10)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    assert await collect(stream, 1) == [("ADDED", "b")]
    await w.close()
