"""List + watch caches of plain dicts (the controller's and kubelet's view of the API).

Lists, then watches from the list's resourceVersion with bookmarks; a 410 Gone or any failure
relists after a back-off. Every change calls `on_change()`: the controller is level-triggered
(each pass recomputes the desired state from the caches), so the callback only needs to wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any

from ..kube import GVR, Kube

__all__ = ["Informer", "key_of"]

log = logging.getLogger("sluice.local.informer")

Key = tuple[str, str]


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class _Gone(Exception):
    pass


class Informer:
    def __init__(
        self,
        kube: Kube,
        gvr: GVR,
        on_change: Callable[[], None],
        namespace: str = "",
        label_selector: str = "",
        watch_timeout: int = 300,
    ) -> None:
        self.kube = kube
        self.gvr = gvr
        self.on_change = on_change
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.objects: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"informer-{self.gvr.plural}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.objects.values())

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                rv = await self._list()
                delay = 0.05
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except _Gone:
                continue
            except Exception as exc:
                log.debug("%s list/watch failed: %r; retrying in %.2fs", self.gvr.plural, exc, delay)
                await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))
                delay = min(delay * 2, 2.0)

    def _query(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def _list(self) -> str:
        status, resp = await self.kube.request("GET", self.gvr.path(self.namespace), query=self._query())
        try:
            body = await resp.read()
        finally:
            resp.release()
        if status != 200:
            raise RuntimeError(f"list {self.gvr.plural}: HTTP {status}: {body[:200]!r}")
        data = json.loads(body)
        self.objects = {key_of(i): i for i in data.get("items") or () if isinstance(i, dict)}
        self.synced.set()
        self.on_change()
        return str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, rv: str) -> None:
        import aiohttp

        while True:
            query = self._query() | {
                "watch": "true",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(self.watch_timeout),
            }
            timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=self.watch_timeout + 30)
            status, resp = await self.kube.request("GET", self.gvr.path(self.namespace), query=query, timeout=timeout)
            try:
                if status == 410:
                    raise _Gone
                if status != 200:
                    raise RuntimeError(f"watch {self.gvr.plural}: HTTP {status}")
                while True:
                    line = await resp.content.readline()
                    if not line:
                        break
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        raise _Gone if obj.get("code") == 410 else RuntimeError(str(obj.get("message", obj)))
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if kind == "DELETED":
                        self.objects.pop(key_of(obj), None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.objects[key_of(obj)] = obj
                    else:
                        continue
                    self.on_change()
            finally:
                resp.release()
