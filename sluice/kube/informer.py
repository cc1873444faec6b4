"""List + watch of one resource into a cache of plain dicts (client-go's reflector + informer).

The one informer behind the activator, the autoscaler and `sluice local`'s controller and
kubelet. It lists, hands the difference from its cache to the handlers, then watches from the
list's resourceVersion with bookmarks. A watch that ends (the server's `timeoutSeconds`) is
resumed from the last resourceVersion seen, without a relist; a 410 Gone (the resourceVersion
fell out of the server's history) relists at once; any other failure relists after a jittered
exponential back-off. Objects are keyed by (namespace, name).

`list_call` is a kubernetes-asyncio list method with its positional arguments bound (e.g.
`partial(custom.list_cluster_custom_object, group, version, plural)`), or anything taking the
same keyword arguments and answering a `_preload_content=False` response.

Handlers are plain functions `(event_type, old, new)`, client-go's OnAdd/OnUpdate/OnDelete in one:
  ADDED     old None,                new the object
  MODIFIED  old the cached version,  new the object
  DELETED   old the object's last state (the watch event's, or the cache's after a relist), new None
They run on the informer's task, after the cache is updated; one that raises is logged and the
others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from .rawjson import JSONObj, read_body

__all__ = ["Handler", "Informer", "Key", "ListCall", "object_key"]

log = logging.getLogger("sluice.kube.informer")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Handler = Callable[[str, JSONObj | None, JSONObj | None], None]
ListCall = Callable[..., Awaitable[Any]]

LIST_TIMEOUT = 30.0  # a list answers in one go; a stuck one is retried rather than waited on


def object_key(obj: JSONObj) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _resource_version(obj: JSONObj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class _Gone(Exception):
    """410: our resourceVersion is older than the server's watch history; relist."""


class Informer:
    """One list+watch loop; `objects` is the cache, `synced` is set after the first list."""

    def __init__(
        self,
        name: str,
        list_call: ListCall,
        *,
        label_selector: str = "",
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff  # (first delay, cap), seconds
        self.objects: dict[Key, JSONObj] = {}
        self.synced = asyncio.Event()
        self.errors = 0
        self._handlers: list[Handler] = []
        self._task: asyncio.Task[None] | None = None

    # ---- the cache ----

    def add_handler(self, handler: Handler) -> None:
        """Add before the informer starts to see every object (there is no replay)."""
        self._handlers.append(handler)

    def get(self, namespace: str, name: str) -> JSONObj | None:
        return self.objects.get((namespace, name))

    def items(self) -> list[JSONObj]:
        """A snapshot of the cached objects (handlers may change the cache while it is used)."""
        return list(self.objects.values())

    # ---- lifecycle: start()/stop() own a task; or await run() in a task of your own ----

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"informer-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run(self) -> None:
        """Lists and watches until cancelled."""
        delay = self.backoff[0]
        failing = False
        while True:
            try:
                rv = await self._list()
                delay, failing = self.backoff[0], False
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except _Gone:
                continue
            except Exception as exc:
                self.errors += 1
                # Warn once per failure streak: an API that stays down must not storm the log.
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "%s list/watch failed: %r; retrying in %.2fs", self.name, exc, delay)
                failing = True
                await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))
                delay = min(delay * 2, self.backoff[1])

    # ---- list and watch ----

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"_preload_content": False}
        if self.label_selector:
            kw["label_selector"] = self.label_selector
        return kw

    async def _list(self) -> str:
        status, _, body = await read_body(await self.list_call(**self._kwargs(), _request_timeout=LIST_TIMEOUT))
        if status == 410:
            raise _Gone
        if status != 200:
            raise RuntimeError(f"list {self.name}: HTTP {status}: {body[:200]!r}")
        data = json.loads(body)
        fresh = {object_key(i): i for i in data.get("items") or () if isinstance(i, dict)}
        old, self.objects = self.objects, fresh
        # Replay the difference, as client-go's Replace does: what vanished while we were not
        # watching is DELETED (handlers would otherwise keep it forever), what changed MODIFIED;
        # an object whose resourceVersion is unchanged is not news.
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj, None)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit("ADDED", None, obj)
            elif _resource_version(prev) != _resource_version(obj):
                self._emit("MODIFIED", prev, obj)
        self.synced.set()
        return str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, rv: str) -> None:
        import aiohttp

        # No total timeout: the stream is meant to stay open for `watch_timeout`; a silent one
        # (bookmarks arrive about once a minute on a real apiserver) fails the read instead.
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=self.watch_timeout + 30)
        while True:
            resp = await self.list_call(
                **self._kwargs(),
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=timeout,
            )
            try:
                if resp.status == 410:
                    raise _Gone
                if resp.status != 200:
                    body = await resp.read()
                    raise RuntimeError(f"watch {self.name}: HTTP {resp.status}: {body[:200]!r}")
                while line := await resp.content.readline():
                    if line.strip():
                        rv = self._on_event(json.loads(line), rv)
                # The server ended the watch (timeoutSeconds): resume from where we are.
            finally:
                resp.release()

    def _on_event(self, event: JSONObj, rv: str) -> str:
        """Applies one watch event; returns the resourceVersion to resume from."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise RuntimeError(f"watch {self.name}: {obj.get('message', obj)}")
        rv = _resource_version(obj) or rv
        key = object_key(obj)
        if kind == "DELETED":
            self.objects.pop(key, None)
            self._emit("DELETED", obj, None)
        elif kind in ("ADDED", "MODIFIED"):
            # The type follows the cache, not the event: an object can be cached before its ADDED
            # arrives (a writer's optimistic update, as `sluice local`'s controller does).
            prev = self.objects.get(key)
            self.objects[key] = obj
            self._emit("ADDED" if prev is None else "MODIFIED", prev, obj)
        # BOOKMARK only moves the resourceVersion on.
        return rv

    def _emit(self, kind: str, old: JSONObj | None, new: JSONObj | None) -> None:
        for handler in self._handlers:
            try:
                handler(kind, old, new)
            except Exception:
                log.exception("%s informer handler failed", self.name)
