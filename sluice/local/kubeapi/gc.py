"""Garbage collection and deletion bookkeeping (what kube-controller-manager does for a cluster).

The real garbage collector works asynchronously from the ownerReference graph; here the same
rules run at the end of the write that made them applicable, so every dependent change is
already stored (and persisted) when the reply goes out:

* Background: once an owner is gone, a dependent with no remaining live owner is deleted; a
  dependent that still has a live owner only loses the reference to the dead one.
* Foreground: the owner carries the `foregroundDeletion` finalizer while its dependents are
  deleted; it goes once no dependent with `blockOwnerDeletion: true` is left.
* Orphan: the owner carries the `orphan` finalizer until the references to it are removed from
  its dependents.
* Namespaces: deleting one deletes its content; it disappears when it is empty.
* A dependent whose owners all do not exist (e.g. created with a stale uid) is collected.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .resources import ResourceType
from .store import Stored

if TYPE_CHECKING:
    from .ops import Operations


class GarbageCollector:
    def __init__(self, ops: Operations) -> None:
        self._ops = ops
        self._work: deque[tuple[str, str]] = deque()
        self._draining = False

    # ------------------------------------------------------------ notifications from writes

    def written(self, rt: ResourceType, s: Stored) -> None:
        meta = s.meta
        if meta.get("deletionTimestamp"):
            self._work.append(("owner-deleting", meta.get("uid", "")))
        if meta.get("ownerReferences"):
            self._work.append(("dangling", meta.get("uid", "")))

    def removed(self, rt: ResourceType, s: Stored) -> None:
        meta = s.meta
        self._work.append(("owner-gone", meta.get("uid", "")))
        for ref in meta.get("ownerReferences") or ():
            self._work.append(("owner-deleting", ref.get("uid", "")))
        if meta.get("namespace"):
            self._work.append(("namespace", meta["namespace"]))

    def empty_namespace(self, name: str) -> None:
        ops = self._ops
        for rt in ops.registry.storage_types():
            if not rt.namespaced:
                continue
            for s in list(ops.store.items(rt.group_resource, name)):
                current = ops.store.get(rt.group_resource, name, s.meta["name"])
                if current is not None and not current.meta.get("deletionTimestamp"):
                    ops.delete_object(rt, current, "Background", 0)
        self._work.append(("namespace", name))

    def scan(self) -> None:
        """Full pass over the graph (after loading persisted state): finish what a crash cut short."""
        ops = self._ops
        for rt in ops.registry.storage_types():
            for s in list(ops.store.items(rt.group_resource, None)):
                self.written(rt, s)
        for ns in list(ops.store.items(("", "namespaces"), None)):
            if ns.meta.get("deletionTimestamp"):
                self.empty_namespace(ns.meta["name"])
        self.drain()

    # ------------------------------------------------------------ processing

    def drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._work:
                kind, a = self._work.popleft()
                if kind == "owner-gone":
                    self._owner_gone(a)
                elif kind == "owner-deleting":
                    self._owner_deleting(a)
                elif kind == "dangling":
                    self._dangling(a)
                elif kind == "namespace":
                    self._namespace(a)
        finally:
            self._draining = False

    def _owner_alive(self, uid: str, dependent_ns: str) -> bool:
        found = self._ops.store.by_uid(uid)
        if found is None:
            return False
        owner_ns = found[1].meta.get("namespace", "")
        # A namespaced owner must live in the dependent's namespace to count (GC looks it up there).
        return not owner_ns or owner_ns == dependent_ns

    def _owner_gone(self, uid: str) -> None:
        ops = self._ops
        for gr, dep in ops.store.dependents(uid):
            if ops.store.by_uid(uid) is not None:
                return  # a new object took the uid? impossible, but never collect a live owner's kids
            rt = ops._type_for(gr)
            refs = dep.meta.get("ownerReferences") or []
            ns = dep.meta.get("namespace", "")
            live = [r for r in refs if r.get("uid") != uid and self._owner_alive(r.get("uid", ""), ns)]
            if live:
                obj = dep.copy()
                obj["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                ops.write(rt, obj)
            elif not dep.meta.get("deletionTimestamp"):
                ops.delete_object(rt, dep, "Background", 0)

    def _owner_deleting(self, uid: str) -> None:
        ops = self._ops
        found = ops.store.by_uid(uid)
        if found is None:
            return
        gr, owner = found
        if not owner.meta.get("deletionTimestamp"):
            return
        finalizers = list(owner.meta.get("finalizers") or [])
        rt = ops._type_for(gr)
        if "orphan" in finalizers:
            for dgr, dep in ops.store.dependents(uid):
                obj = dep.copy()
                obj["metadata"]["ownerReferences"] = [
                    r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
                ]
                if not obj["metadata"]["ownerReferences"]:
                    del obj["metadata"]["ownerReferences"]
                ops.write(ops._type_for(dgr), obj)
            self._drop_finalizer(rt, uid, "orphan")
        elif "foregroundDeletion" in finalizers:
            blocking = False
            for dgr, dep in ops.store.dependents(uid):
                drt = ops._type_for(dgr)
                if not dep.meta.get("deletionTimestamp"):
                    dep = ops.delete_object(drt, dep, "Foreground", 0)
                current = ops.store.get(dgr, dep.meta.get("namespace", ""), dep.meta["name"])
                if current is not None and any(
                    r.get("uid") == uid and r.get("blockOwnerDeletion")
                    for r in current.meta.get("ownerReferences") or []
                ):
                    blocking = True
            if not blocking:
                self._drop_finalizer(rt, uid, "foregroundDeletion")

    def _drop_finalizer(self, rt: ResourceType, uid: str, finalizer: str) -> None:
        found = self._ops.store.by_uid(uid)
        if found is None:
            return
        obj = found[1].copy()
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        if not obj["metadata"]["finalizers"]:
            del obj["metadata"]["finalizers"]
        self._ops.write(rt, obj)

    def _dangling(self, uid: str) -> None:
        ops = self._ops
        found = ops.store.by_uid(uid)
        if found is None:
            return
        gr, dep = found
        refs = dep.meta.get("ownerReferences") or []
        ns = dep.meta.get("namespace", "")
        if (
            refs
            and not dep.meta.get("deletionTimestamp")
            and not any(self._owner_alive(r.get("uid", ""), ns) for r in refs)
        ):
            ops.delete_object(ops._type_for(gr), dep, "Background", 0)

    def _namespace(self, name: str) -> None:
        ops = self._ops
        ns = ops.store.get(("", "namespaces"), "", name)
        if ns is None or not ns.meta.get("deletionTimestamp"):
            return
        for rt in ops.registry.storage_types():
            if rt.namespaced and next(iter(ops.store.items(rt.group_resource, name)), None) is not None:
                return
        obj = ns.copy()
        # The namespace controller removes its "kubernetes" finalizer once the namespace is empty.
        obj.setdefault("spec", {})["finalizers"] = []
        ops.write(ops._type_for(("", "namespaces")), obj)
