"""Create-or-patch against the caches: write only when the desired state differs.

The controller is level-triggered; without this, every pass would rewrite every object and each
write would wake the next pass.
"""

from __future__ import annotations

import logging
from typing import Any

from ..kube import GVR, Kube, KubeError
from .informer import Informer
from .names import meta, status_differs

log = logging.getLogger("sluice.local.controller")

__all__ = ["Writer"]


def _differs(existing: Any, desired: Any) -> bool:
    """True if a key of `desired` is missing or different in `existing` (extra keys set by the
    API server, like a Service's clusterIP, are ignored)."""
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            return True
        return any(_differs(existing.get(k), v) for k, v in desired.items())
    return bool(existing != desired)


class Writer:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.writes = 0

    async def ensure(
        self,
        gvr: GVR,
        informer: Informer,
        desired: dict[str, Any],
        spec_keys: tuple[str, ...] = ("spec",),
        create_only: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """Creates `desired`, or merge-patches labels/annotations/ownerReferences and the
        `spec_keys` sections when they differ. Keys in `create_only` (paths inside spec, e.g.
        `replicas`, which the autoscaler owns) are set at creation only."""
        m = meta(desired)
        ns, name = m.get("namespace", ""), m["name"]
        existing = informer.get(ns, name)
        try:
            if existing is None:
                self.writes += 1
                created = await self.kube.create(gvr, ns, desired)
                informer.objects[(ns, name)] = created
                return created
            patch: dict[str, Any] = {}
            em = meta(existing)
            md: dict[str, Any] = {}
            for key in ("labels", "annotations", "ownerReferences"):
                if key in m and _differs(em.get(key) or {} if key != "ownerReferences" else em.get(key), m[key]):
                    md[key] = m[key]
            if md:
                patch["metadata"] = md
            for key in spec_keys:
                want = desired.get(key)
                if isinstance(want, dict):
                    want = {k: v for k, v in want.items() if k not in create_only}
                if want is not None and _differs(existing.get(key), want):
                    patch[key] = want
            if not patch:
                return existing
            self.writes += 1
            patched = await self.kube.merge_patch(gvr, ns, name, patch)
            informer.objects[(ns, name)] = patched
            return patched
        except KubeError as exc:
            if exc.status in (404, 409):
                return None  # raced with another writer or a deletion: the next pass retries
            log.warning("writing %s %s/%s failed: %s", gvr.plural, ns, name, exc)
            return None

    async def status(self, gvr: GVR, informer: Informer, obj: dict[str, Any], status: dict[str, Any]) -> None:
        if not status_differs(obj.get("status") or {}, status):
            return
        m = meta(obj)
        try:
            self.writes += 1
            patched = await self.kube.merge_patch(gvr, m.get("namespace", ""), m["name"], {"status": status}, "status")
            informer.objects[(m.get("namespace", ""), m["name"])] = patched
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("status of %s %s/%s failed: %s", gvr.plural, m.get("namespace"), m["name"], exc)
