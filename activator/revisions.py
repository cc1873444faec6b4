"""The revisions this activator knows, each with its throttler (CONTRACT.md §3.5).

Fed by three informers: Revisions (create / delete the per-revision state), the
backend watchers' published healthy sets, and the revisions' *public* Endpoints,
which list the activators in the path and so give this activator its slice.
Updates may arrive in any order; the latest backend / activator state is kept
per revision and applied when the Revision shows up.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from sluice.http.deadlines import RequestTimeouts
from sluice.telemetry.resource import revision_attributes

from .backends import LABEL_REVISION, LABEL_SERVICE_TYPE, PoolRegistry
from .revision import RevisionInfo, RevKey
from .throttler import PodTracker, RevisionThrottler

__all__ = ["RevisionEntry", "Revisions", "activator_slice"]

log = logging.getLogger("activator.revisions")


class RevisionEntry:
    __slots__ = (
        "info",
        "key",
        "pools",
        "private_host",
        "span_attributes",
        "throttler",
        "timeouts",
    )

    def __init__(self, info: RevisionInfo, throttler: RevisionThrottler, pools: PoolRegistry) -> None:
        self.key = info.key
        self.throttler = throttler
        self.pools = pools
        self.info = info
        self.timeouts = RequestTimeouts()
        self.private_host = b""
        self.set_info(info)

    def set_info(self, info: RevisionInfo) -> None:
        self.info = info
        # The revision's attributes on its requests' spans (activator_proxy, §3.10).
        self.span_attributes = revision_attributes(info.namespace, info.service, info.configuration, info.name)
        # §3.6: the timeout handler's three timers come from the Revision spec.
        self.timeouts = RequestTimeouts(
            float(info.timeout_seconds),
            float(info.response_start_timeout_seconds),
            float(info.idle_timeout_seconds),
        )
        self.private_host = f"{info.name}-private.{info.namespace}".encode()

    def pool_for(self, dest: str) -> Any:
        return self.pools.get(dest, self.key[0])


def activator_slice(obj: dict[str, Any], port_name: str, own_ip: str) -> tuple[int, int] | None:
    """(numActivators, own index) from a revision's public Endpoints (§3.5), or None
    when this activator is not listed (e.g. the SKS is in Serve mode)."""
    ips: set[str] = set()
    for subset in obj.get("subsets") or ():
        if not isinstance(subset, dict):
            continue
        names = {p.get("name") for p in subset.get("ports") or () if isinstance(p, dict)}
        if port_name not in names:
            continue
        for addr in subset.get("addresses") or ():
            if isinstance(addr, dict) and addr.get("ip"):
                ips.add(str(addr["ip"]))
    if own_ip not in ips:
        return None
    ordered = sorted(ips)  # as strings, like Go (not numerically)
    return len(ordered), ordered.index(own_ip)


class Revisions:
    def __init__(
        self,
        pools: PoolRegistry,
        pod_ip: str,
        queue_depth: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.pools = pools
        self.pod_ip = pod_ip
        self.queue_depth = queue_depth
        self.rng = rng or random.Random()
        self.entries: dict[RevKey, RevisionEntry] = {}
        # The same entries keyed by the ingress headers' raw bytes (namespace, name): the
        # hot path looks a request up without decoding or hashing new strings.
        self.by_header: dict[tuple[bytes, bytes], RevisionEntry] = {}
        self.backends: dict[RevKey, tuple[frozenset[str], str | None]] = {}
        self.activators: dict[RevKey, tuple[int, int]] = {}

    def get(self, key: RevKey) -> RevisionEntry | None:
        return self.entries.get(key)

    def has_waiters(self, key: RevKey) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry.throttler.live_waiting > 0

    def _tracker_factory(self, namespace: str) -> Callable[[str, int], PodTracker]:
        def make(dest: str, cc: int) -> PodTracker:
            return PodTracker(dest, cc, self.pools.get(dest, namespace))

        return make

    # ---- Revision informer ------------------------------------------------------------

    def revision_event(self, kind: str, obj: dict[str, Any]) -> RevKey:
        info = RevisionInfo.from_object(obj)
        key = info.key
        if kind == "DELETED":
            self.delete(key)
            return key
        entry = self.entries.get(key)
        if entry is not None and entry.info.container_concurrency == info.container_concurrency:
            entry.set_info(info)
            return key
        throttler = RevisionThrottler(
            info.container_concurrency, self.queue_depth, self.rng, make_tracker=self._tracker_factory(key[0])
        )
        if entry is not None:
            # containerConcurrency is immutable in Knative; a changed one gets a new throttler.
            for owner in entry.throttler.close():
                owner.revision_gone()
        entry = self.entries[key] = RevisionEntry(info, throttler, self.pools)
        self.by_header[(key[0].encode("latin-1"), key[1].encode("latin-1"))] = entry
        activators = self.activators.get(key)
        if activators is not None:
            throttler.update_activators(*activators)
        backends = self.backends.get(key)
        if backends is not None:
            throttler.update_backends(backends[0], backends[1])
        return key

    def delete(self, key: RevKey) -> None:
        entry = self.entries.pop(key, None)
        self.by_header.pop((key[0].encode("latin-1"), key[1].encode("latin-1")), None)
        self.activators.pop(key, None)
        if entry is None:
            return
        # Each waiting request is answered (§3.6: revision vanished → 500), none dropped.
        for owner in entry.throttler.close():
            owner.revision_gone()

    # ---- backend watcher ----------------------------------------------------------------

    def publish(self, key: RevKey, dests: frozenset[str], cluster_ip: str | None) -> None:
        if not dests and cluster_ip is None:
            self.backends.pop(key, None)
        else:
            self.backends[key] = (dests, cluster_ip)
        entry = self.entries.get(key)
        if entry is not None:
            entry.throttler.update_backends(dests, cluster_ip)

    # ---- public Endpoints: activator slicing -------------------------------------------

    def public_endpoints_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        rev = labels.get(LABEL_REVISION)
        if kind == "DELETED" or not rev or labels.get(LABEL_SERVICE_TYPE) != "Public":
            return
        key = (str(meta.get("namespace", "")), str(rev))
        entry = self.entries.get(key)
        port_name = entry.info.port_name if entry is not None else "http"
        found = activator_slice(obj, port_name, self.pod_ip)
        if found is None:
            return
        self.activators[key] = found
        if entry is not None:
            entry.throttler.update_activators(*found)

    # ---- introspection ----------------------------------------------------------------

    def close_all(self) -> None:
        for key in list(self.entries):
            self.delete(key)
