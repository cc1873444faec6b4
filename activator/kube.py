"""List + watch over kubernetes-asyncio, delivering plain dicts (CONTRACT.md §3.1).

The activator's only path to Kubernetes (ARCHITECTURE.md): the same calls work
against a real kube-apiserver and the embedded one of `sluice local`. Objects are
read as raw JSON (`_preload_content=False`) rather than generated models: the
handlers need a handful of fields, and Revisions are custom objects anyway.

An informer lists, replays the difference to its handler (synthesised DELETED for
objects gone since the last list), then watches from the list's resourceVersion
with bookmarks; a 410 Gone or any failure relists after a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Handler", "Informer", "object_key", "read_configmap"]

log = logging.getLogger("activator.kube")

Handler = Callable[[str, dict[str, Any]], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)
ListCall = Callable[..., Awaitable[Any]]


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class _Gone(Exception):
    pass


class Informer:
    """One list+watch loop for a resource; `synced` is set after the first list."""

    def __init__(
        self,
        name: str,
        list_call: ListCall,
        handler: Handler,
        label_selector: str = "",
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.handler = handler
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"informer-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                rv = await self._list()
                delay = self.backoff[0]
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except _Gone:
                continue  # relist at once: our resourceVersion is too old
            except Exception as exc:
                self.errors += 1
                log.warning(f"{self.name} list/watch failed: {exc!r}; retrying in {delay:.1f}s")
                await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))
                delay = min(delay * 2, self.backoff[1])

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"_preload_content": False}
        if self.label_selector:
            kw["label_selector"] = self.label_selector
        return kw

    async def _list(self) -> str:
        resp = await self.list_call(**self._kwargs(), _request_timeout=30)
        try:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"list {self.name}: HTTP {resp.status}: {body[:200]!r}")
        finally:
            resp.release()
        data = json.loads(body)
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        for item in data.get("items") or ():
            if isinstance(item, dict):
                fresh[object_key(item)] = item
        old, self.objects = self.objects, fresh
        for key, obj in old.items():
            if key not in fresh:
                self._deliver("DELETED", obj)
        for key, obj in fresh.items():
            self._deliver("MODIFIED" if key in old else "ADDED", obj)
        self.synced.set()
        return str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, rv: str) -> None:
        import aiohttp

        while True:
            resp = await self.list_call(
                **self._kwargs(),
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=self.watch_timeout + 30),
            )
            try:
                if resp.status == 410:
                    raise _Gone
                if resp.status != 200:
                    body = await resp.read()
                    raise RuntimeError(f"watch {self.name}: HTTP {resp.status}: {body[:200]!r}")
                while True:
                    line = await resp.content.readline()
                    if not line:
                        break  # server-side timeout: resume from the last resourceVersion
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone
                        raise RuntimeError(f"watch {self.name}: {obj.get('message', obj)}")
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if kind == "DELETED":
                        self.objects.pop(key, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.objects[key] = obj
                    else:
                        continue
                    self._deliver(kind, obj)
            finally:
                resp.release()

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception(f"{self.name} handler failed")


async def read_configmap(api_client: Any, namespace: str, name: str) -> dict[str, str]:
    """A ConfigMap's data, {} if it does not exist (the defaults then apply)."""
    from kubernetes_asyncio import client

    core: Any = client.CoreV1Api(api_client)
    resp = await core.read_namespaced_config_map(name, namespace, _preload_content=False, _request_timeout=30)
    try:
        body = await resp.read()
        if resp.status == 404:
            return {}
        if resp.status != 200:
            raise RuntimeError(f"get configmap {namespace}/{name}: HTTP {resp.status}: {body[:200]!r}")
    finally:
        resp.release()
    data = json.loads(body).get("data") or {}
    return {str(k): str(v) for k, v in data.items()}


async def make_api_client(kubeconfig: str) -> Any:
    """A kubernetes_asyncio ApiClient: from `kubeconfig` when given (tests, `sluice local`,
    running outside a cluster), else the pod's in-cluster service account."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio import config as _config

    config: Any = _config  # partially typed upstream; we only call two entry points
    if kubeconfig:
        return await config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()
