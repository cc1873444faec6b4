"""core/v1 Events, written the way client-go's event recorder writes them.

Each (object, type, reason, message, source) is one Event: the first occurrence creates it
(`<object name>.<hex nanoseconds>`, count 1), a repeat patches `count` and `lastTimestamp` (the
EventCorrelator's de-duplication), so `kubectl describe` and `kubectl get events` show
`BackOff (x5 over 2m)` rather than five rows. Recording never fails the caller: an Event is
best-effort, as on a cluster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ..kube import GVR, Kube, KubeError
from .names import NODE_NAME, meta, now_rfc3339

__all__ = ["EVENTS", "EventRecorder"]

log = logging.getLogger("sluice.local.events")

EVENTS = GVR("", "v1", "events")
MAX_CACHED = 4096  # the correlator's LRU size


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int


class EventRecorder:
    def __init__(self, kube: Kube, component: str, host: str = NODE_NAME) -> None:
        self.kube = kube
        self.component = component
        self.host = host
        self._seen: dict[tuple[str, ...], _Seen] = {}
        self._last: dict[tuple[str, str], tuple[str, ...]] = {}

    async def event(self, obj: dict[str, Any], type_: str, reason: str, message: str, field_path: str = "") -> None:
        m = meta(obj)
        ns = m.get("namespace") or "default"
        key = (m.get("uid", ""), type_, reason, message, field_path)
        now = now_rfc3339()
        seen = self._seen.get(key)
        try:
            if seen is not None:
                seen.count += 1
                patch = {"count": seen.count, "lastTimestamp": now}
                await self.kube.merge_patch(EVENTS, seen.namespace, seen.name, patch)
                return
            name = f"{m.get('name', '')}.{time.time_ns():x}"
            involved = {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": m.get("name", ""),
                "namespace": ns,
                "uid": m.get("uid", ""),
                "resourceVersion": m.get("resourceVersion", ""),
            }
            if field_path:
                involved["fieldPath"] = field_path
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": type_,
                "source": {"component": self.component, "host": self.host},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": self.component,
                "reportingInstance": self.host,
            }
            await self.kube.create(EVENTS, ns, body)
            if len(self._seen) >= MAX_CACHED:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = _Seen(name, ns, 1)
        except KubeError as exc:
            if seen is not None and exc.status == 404:
                self._seen.pop(key, None)  # someone deleted it: the next one starts a new Event
            log.debug("event %s %s: %s", reason, m.get("name"), exc)

    async def on_change(
        self, obj: dict[str, Any], topic: str, state: tuple[str, ...], type_: str, reason: str, message: str
    ) -> None:
        """Records once per change of `state` (a level-triggered loop sees the same state every
        pass; a transition is what an Event reports). An empty `reason` only remembers the state."""
        key = (meta(obj).get("uid", ""), topic)
        if self._last.get(key) == state:
            return
        self._last[key] = state
        if len(self._last) > MAX_CACHED:
            self._last.pop(next(iter(self._last)))
        if reason:
            await self.event(obj, type_, reason, message)
