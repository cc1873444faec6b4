"""The shared list+watch informer (`sluice.kube.Informer`) against the embedded API server, through
kubernetes-asyncio's generated list methods: the path the activator and the autoscaler take."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sluice.kube import Informer, call, call_obj, new_api_client, read_configmap
from sluice.local.kube import ALL, Kube
from sluice.local.kubeapi import EmbeddedAPIServer

NS = "default"
Event = tuple[str, str, str | None, str | None]  # (type, name, old resourceVersion, new resourceVersion)


async def until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def _rv(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else str(obj["metadata"]["resourceVersion"])


class Recorder:
    """A handler keeping every event it is handed."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        self.events.append((kind, obj["metadata"]["name"], _rv(old), _rv(new)))

    def of(self, name: str) -> list[str]:
        return [kind for kind, n, _, _ in self.events if n == name]


class Cluster:
    """ConfigMaps in one namespace: created, patched and deleted through the real client."""

    def __init__(self, api: Any) -> None:
        from kubernetes_asyncio import client

        self.core: Any = client.CoreV1Api(api)
        self.list_call = functools.partial(self.core.list_namespaced_config_map, NS)

    async def create(self, name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
        body = {"metadata": {"name": name, "labels": labels or {}}, "data": data}
        return await call_obj(self.core.create_namespaced_config_map, NS, body)

    async def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await call_obj(self.core.patch_namespaced_config_map, name, NS, body)

    async def delete(self, name: str) -> None:
        await call(self.core.delete_namespaced_config_map, name, NS)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedAPIServer]:
    # A short history makes 410 Gone easy to reach; frequent bookmarks keep watches moving.
    srv = EmbeddedAPIServer(port=0, crd_paths=[], history_size=5, bookmark_interval=0.2)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def api(server: EmbeddedAPIServer, tmp_path: Path) -> AsyncIterator[Any]:
    client = await new_api_client(server.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def cluster(api: Any) -> Cluster:
    return Cluster(api)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Informer], Awaitable[Informer]]]:
    """Starts informers and waits for their first list; stops them whatever the test did."""
    started: list[Informer] = []

    async def start(informer: Informer) -> Informer:
        started.append(informer)
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 5)
        return informer

    yield start
    for informer in started:
        await informer.stop()


class GatedListCall:
    """The real list call, counting lists and watches; `hold()` parks the next watch request
    until `release()`, so the test can change the world while the informer is not watching."""

    def __init__(self, inner: Callable[..., Awaitable[Any]]) -> None:
        self.inner = inner
        self.lists = 0
        self.watches = 0
        self.held = asyncio.Event()
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        self.held.clear()
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def __call__(self, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            if self._gate is not None:
                self.held.set()
                await self._gate.wait()
            self.watches += 1
        else:
            self.lists += 1
        return await self.inner(**kwargs)


async def test_initial_list_then_synced(cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]) -> None:
    a = await cluster.create("a", k="1")
    b = await cluster.create("b")
    events = Recorder()
    informer = Informer("configmaps", cluster.list_call)
    informer.add_handler(events)
    assert not informer.synced.is_set()
    await running(informer)
    # The list's objects are all delivered, as ADDED without an old version, before `synced`.
    assert sorted(events.events) == [("ADDED", "a", None, _rv(a)), ("ADDED", "b", None, _rv(b))]
    assert informer.get(NS, "a") == a
    assert sorted(o["metadata"]["name"] for o in informer.items()) == ["a", "b"]
    assert set(informer.objects) == {(NS, "a"), (NS, "b")}


async def test_watch_delivers_added_modified_deleted(
    cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    events = Recorder()
    second = Recorder()
    informer = Informer("configmaps", cluster.list_call)
    informer.add_handler(events)
    informer.add_handler(second)
    await running(informer)
    assert events.events == []

    created = await cluster.create("c", k="1")
    await until(lambda: informer.get(NS, "c") is not None, what="ADDED")
    patched = await cluster.patch("c", {"data": {"k": "2"}})
    await until(lambda: (informer.get(NS, "c") or {}).get("data") == {"k": "2"}, what="MODIFIED")
    await cluster.delete("c")
    await until(lambda: informer.get(NS, "c") is None, what="DELETED")

    assert events.events[0] == ("ADDED", "c", None, _rv(created))
    assert events.events[1] == ("MODIFIED", "c", _rv(created), _rv(patched))
    kind, name, old_rv, new_rv = events.events[2]
    # DELETED carries the object's last state as old, nothing as new.
    assert (kind, name, new_rv) == ("DELETED", "c", None) and old_rv is not None
    assert len(events.events) == 3
    assert second.events == events.events  # every handler sees every event


async def test_failing_handler_does_not_stop_the_others(
    cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    def broken(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        raise ValueError("handler bug")

    events = Recorder()
    informer = Informer("configmaps", cluster.list_call)
    informer.add_handler(broken)
    informer.add_handler(events)
    await running(informer)
    await cluster.create("d")
    await until(lambda: events.of("d") == ["ADDED"], what="ADDED past a failing handler")
    assert informer.errors == 0


async def test_resumes_after_the_watch_ends_without_relisting(
    cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    gated = GatedListCall(cluster.list_call)
    events = Recorder()
    informer = Informer("configmaps", gated, watch_timeout=1)
    informer.add_handler(events)
    await running(informer)
    await until(lambda: gated.watches >= 2, timeout=5, what="the server to end the first watch (timeoutSeconds=1)")
    await cluster.create("after")
    await until(lambda: events.of("after") == ["ADDED"], what="an event on the resumed watch")
    assert gated.lists == 1  # resumed from the last resourceVersion, not relisted
    assert informer.errors == 0


async def test_relists_on_410_and_synthesizes_deleted(
    cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    gone = await cluster.create("gone")
    kept = await cluster.create("kept")
    changed = await cluster.create("changed", k="1")
    gated = GatedListCall(cluster.list_call)
    events = Recorder()
    informer = Informer("configmaps", gated, watch_timeout=1)
    informer.add_handler(events)
    await running(informer)
    assert gated.lists == 1

    # Park the informer between two watches, then change more than the history holds (5).
    gated.hold()
    await asyncio.wait_for(gated.held.wait(), 5)
    await cluster.delete("gone")
    changed2 = await cluster.patch("changed", {"data": {"k": "2"}})
    fresh = [await cluster.create(f"new-{i}") for i in range(6)]
    gated.release()

    await until(lambda: gated.lists == 2, what="a relist after 410 Gone")
    await until(lambda: informer.get(NS, "gone") is None and len(informer.objects) == 8, what="the relisted cache")
    # The delete happened while nobody watched: the relist tells the handlers.
    assert ("DELETED", "gone", _rv(gone), None) in events.events
    assert ("MODIFIED", "changed", _rv(changed), _rv(changed2)) in events.events
    for obj in fresh:
        assert ("ADDED", obj["metadata"]["name"], None, _rv(obj)) in events.events
    assert events.of("kept") == ["ADDED"]  # unchanged across the relist: no event
    assert informer.get(NS, "kept") == kept
    assert informer.errors == 0  # 410 is routine, not a failure

    # And it watches again from the new list.
    await cluster.create("later")
    await until(lambda: events.of("later") == ["ADDED"], what="the watch after the relist")


async def test_label_selector(cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]) -> None:
    await cluster.create("in", labels={"app": "x"})
    await cluster.create("out", labels={"app": "y"})
    events = Recorder()
    informer = Informer("configmaps", cluster.list_call, label_selector="app=x")
    informer.add_handler(events)
    await running(informer)
    assert set(informer.objects) == {(NS, "in")}

    await cluster.create("in-2", labels={"app": "x"})
    await cluster.create("out-2")
    await until(lambda: informer.get(NS, "in-2") is not None, what="a matching ADDED")
    # An object that stops matching leaves the cache as a DELETED, as from the real watch cache.
    await cluster.patch("in", {"metadata": {"labels": {"app": "z"}}})
    await until(lambda: informer.get(NS, "in") is None, what="DELETED for a label change")
    assert events.of("in") == ["ADDED", "DELETED"]
    assert {name for _, name, _, _ in events.events} == {"in", "in-2"}


async def test_stop_leaves_no_task(cluster: Cluster) -> None:
    informer = Informer("configmaps", cluster.list_call)
    informer.start()
    await asyncio.wait_for(informer.synced.wait(), 5)
    await asyncio.sleep(0.05)  # let the watch request be in flight
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "informer-configmaps"]
    await informer.stop()
    # (The embedded server's own tasks share this loop; only ours must be gone.)
    assert task.done() and not [t for t in asyncio.all_tasks() if t.get_name().startswith("informer-")]
    await informer.stop()  # idempotent


async def test_retries_with_backoff_while_the_api_is_down(
    server: EmbeddedAPIServer, cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    calls = 0

    async def failing_then_real(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise ConnectionRefusedError("API down")
        return await cluster.list_call(**kwargs)

    await cluster.create("x")
    informer = Informer("configmaps", failing_then_real, backoff=(0.01, 0.02))
    await running(informer)
    assert informer.errors == 3
    assert informer.get(NS, "x") is not None


async def test_local_informer_over_kube_list_call(
    api: Any, cluster: Cluster, running: Callable[[Informer], Awaitable[Informer]]
) -> None:
    """`sluice local`'s adapter: the same informer over a GVR path, waking a level-triggered
    controller on every change."""
    from sluice.local.controller.informer import Informer as LocalInformer

    await cluster.create("in", labels={"app": "x"})
    wakes = 0

    def on_change() -> None:
        nonlocal wakes
        wakes += 1

    informer = LocalInformer(Kube(api), ALL.CONFIGMAPS, on_change, namespace=NS, label_selector="app=x")
    await running(informer)
    assert [o["metadata"]["name"] for o in informer.items()] == ["in"] and wakes == 1
    await cluster.create("out")
    await cluster.create("in-2", labels={"app": "x"})
    await until(lambda: informer.get(NS, "in-2") is not None, what="ADDED through the GVR path")
    assert wakes == 2


async def test_read_configmap(api: Any, cluster: Cluster) -> None:
    await cluster.create("config-x", a="1")
    assert await read_configmap(api, NS, "config-x") == {"a": "1"}
    assert await read_configmap(api, NS, "missing") == {}  # Knative's defaults then apply
