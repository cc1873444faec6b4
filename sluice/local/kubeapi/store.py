"""The object store: one global resourceVersion counter, a bounded event history, watchers.

Everything runs on the event loop thread, so each store call is atomic without locks. Stored
objects are never mutated after they are stored; readers get the pre-serialised JSON (`raw`)
or a deep copy (`copy()`), which is what keeps list/watch of thousands of objects cheap.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .meta import JSONObj
from .persistence import SQLiteBackend
from .selectors import FieldRequirement, Requirement, fields_match, labels_match

GroupResource = tuple[str, str]
ObjKey = tuple[str, str]  # (namespace or "", name)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True, frozen=True)
class Stored:
    obj: JSONObj
    raw: bytes
    rv: int

    def copy(self) -> JSONObj:
        result: JSONObj = json.loads(self.raw)
        return result

    @property
    def meta(self) -> JSONObj:
        m: JSONObj = self.obj["metadata"]
        return m


@dataclass(slots=True)
class Event:
    type: str  # ADDED | MODIFIED | DELETED
    gr: GroupResource
    namespace: str
    stored: Stored
    prev: Stored | None = None

    @property
    def rv(self) -> int:
        return self.stored.rv


@dataclass(eq=False)
class Watcher:
    gr: GroupResource
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[tuple[str, Stored] | None] = field(default_factory=lambda: asyncio.Queue(maxsize=0))
    limit: int = 50_000
    closed: bool = False

    def offer(self, kind: str, stored: Stored) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.limit:
            # A watcher that cannot keep up is cut off, as the real watch cache does; the
            # client re-watches from its last resourceVersion.
            self.close()
            return
        self.queue.put_nowait((kind, stored))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def _match(self, s: Stored) -> bool:
        return labels_match(self.labels, s.obj) and fields_match(self.fields, s.obj)

    def deliver(self, ev: Event) -> None:
        if ev.gr != self.gr or (self.namespace is not None and ev.namespace != self.namespace):
            return
        now = self._match(ev.stored)
        if ev.type != "MODIFIED" or ev.prev is None:
            if now:
                self.offer(ev.type, ev.stored)
            return
        before = self._match(ev.prev)
        # A modification that moves an object into or out of the selector is seen as
        # ADDED / DELETED by a filtered watch, as in the real watch cache.
        if before and now:
            self.offer("MODIFIED", ev.stored)
        elif now:
            self.offer("ADDED", ev.stored)
        elif before:
            self.offer("DELETED", ev.stored)


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Store:
    def __init__(self, backend: SQLiteBackend | None = None, history_size: int = 10_000) -> None:
        self._objects: dict[GroupResource, dict[ObjKey, Stored]] = {}
        self._sorted: dict[GroupResource, list[ObjKey]] = {}
        self._uids: dict[str, tuple[GroupResource, ObjKey]] = {}
        self._dependents: dict[str, set[tuple[GroupResource, ObjKey]]] = {}
        self._history: deque[Event] = deque()
        self._history_size = max(1, history_size)
        self._watchers: set[Watcher] = set()
        self._backend = backend
        self.rv = 0
        self._compacted_rv = 0
        if backend is not None:
            rv, rows = backend.load()
            for group, resource, body in rows:
                obj = json.loads(body)
                meta = obj["metadata"]
                s = Stored(obj, body, int(meta["resourceVersion"]))
                self._index((group, resource), (meta.get("namespace", ""), meta["name"]), s)
            self.rv = rv
            # History does not survive a restart: any older version is answered with 410.
            self._compacted_rv = rv

    # ------------------------------------------------------------ reads

    def get(self, gr: GroupResource, namespace: str, name: str) -> Stored | None:
        return self._objects.get(gr, {}).get((namespace, name))

    def by_uid(self, uid: str) -> tuple[GroupResource, Stored] | None:
        loc = self._uids.get(uid)
        if loc is None:
            return None
        s = self._objects[loc[0]].get(loc[1])
        return (loc[0], s) if s is not None else None

    def dependents(self, uid: str) -> list[tuple[GroupResource, Stored]]:
        out = []
        for gr, key in sorted(self._dependents.get(uid, ())):
            s = self._objects.get(gr, {}).get(key)
            if s is not None:
                out.append((gr, s))
        return out

    def items(self, gr: GroupResource, namespace: str | None, after: ObjKey | None = None) -> Iterator[Stored]:
        """Objects in (namespace, name) order, optionally starting after a key (list paging)."""
        bucket = self._objects.get(gr, {})
        keys = self._sorted.get(gr)
        if keys is None:
            # Sorted once and reused until an object is added or removed (updates keep keys).
            keys = self._sorted[gr] = sorted(bucket)
        start = 0
        if namespace is not None:
            start = bisect.bisect_left(keys, (namespace, ""))
        if after is not None:
            start = max(start, bisect.bisect_right(keys, after))
        for k in keys[start:]:
            if namespace is not None and k[0] != namespace:
                break
            s = bucket.get(k)
            if s is not None:
                yield s

    def count(self, gr: GroupResource) -> int:
        return len(self._objects.get(gr, {}))

    def group_resources(self) -> list[GroupResource]:
        return list(self._objects)

    # ------------------------------------------------------------ writes

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _index(self, gr: GroupResource, key: ObjKey, s: Stored) -> None:
        bucket = self._objects.setdefault(gr, {})
        if key not in bucket:
            self._sorted.pop(gr, None)
        bucket[key] = s
        uid = s.meta.get("uid")
        if uid:
            self._uids[uid] = (gr, key)
        for ref in s.meta.get("ownerReferences") or ():
            self._dependents.setdefault(ref.get("uid", ""), set()).add((gr, key))

    def _unindex(self, gr: GroupResource, key: ObjKey, s: Stored, replacing: bool = False) -> None:
        if not replacing:
            self._objects.get(gr, {}).pop(key, None)
            self._sorted.pop(gr, None)
        uid = s.meta.get("uid")
        if uid and self._uids.get(uid) == (gr, key):
            del self._uids[uid]
        for ref in s.meta.get("ownerReferences") or ():
            deps = self._dependents.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard((gr, key))
                if not deps:
                    del self._dependents[ref.get("uid", "")]

    def put(self, gr: GroupResource, obj: JSONObj) -> Stored:
        """Store a new version of `obj` (created or updated) under the next resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        s = Stored(obj, dumps(obj), rv)
        prev = self._objects.get(gr, {}).get(key)
        if self._backend is not None:
            try:
                self._backend.put(gr[0], gr[1], key[0], key[1], rv, s.raw)
            except Exception:
                self.rv -= 1
                raise
        if prev is not None:
            self._unindex(gr, key, prev, replacing=True)
        self._index(gr, key, s)
        self._emit(Event("MODIFIED" if prev is not None else "ADDED", gr, key[0], s, prev))
        return s

    def remove(self, gr: GroupResource, namespace: str, name: str, final: JSONObj | None = None) -> Stored | None:
        """Delete an object; `final` is its last state when the deletion is an update (the last
        finalizer removed), otherwise the stored state is what the DELETED event shows."""
        prev = self._objects.get(gr, {}).get((namespace, name))
        if prev is None:
            return None
        rv = self._next_rv()
        # The DELETED event carries the object at the resourceVersion of the deletion.
        obj = copy.deepcopy(final) if final is not None else prev.copy()
        obj["metadata"]["resourceVersion"] = str(rv)
        s = Stored(obj, dumps(obj), rv)
        if self._backend is not None:
            try:
                self._backend.delete(gr[0], gr[1], namespace, name, rv)
            except Exception:
                self.rv -= 1
                raise
        self._unindex(gr, (namespace, name), prev)
        self._emit(Event("DELETED", gr, namespace, s))
        return s

    def _emit(self, ev: Event) -> None:
        self._history.append(ev)
        if len(self._history) > self._history_size:
            self._compacted_rv = self._history.popleft().rv
        for w in list(self._watchers):
            w.deliver(ev)

    # ------------------------------------------------------------ watch

    def watch(
        self,
        gr: GroupResource,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        since: int | None,
    ) -> Watcher:
        """Start a watch. `since=None` replays the current state as ADDED events first
        ("0"/unset resourceVersion semantics); otherwise events newer than `since` are replayed
        from history, or TooOld is raised when history no longer reaches back that far."""
        w = Watcher(gr, namespace, labels, fields)
        if since is None:
            for s in self.items(gr, namespace):
                if w._match(s):
                    w.offer("ADDED", s)
        else:
            if since < self._compacted_rv:
                raise TooOld(since, self._compacted_rv + 1)
            for ev in self._history:
                if ev.rv > since:
                    w.deliver(ev)
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)
        w.close()

    def close(self) -> None:
        for w in list(self._watchers):
            self.unwatch(w)
        if self._backend is not None:
            self._backend.close()
