"""Learning a revision's backends (CONTRACT.md §3.4; Go `net/revision_backends.go`).

The `<rev>-private` Endpoints list the revision's pods (ready and not ready). One
`RevisionWatcher` per revision probes them directly (`probe.py`) and publishes the
healthy set to the throttler; when pods cannot be probed but the private ClusterIP
can (a mesh in the way, mode `auto`/`enabled`), it publishes the ClusterIP instead.

Two Sluice additions, both in service of requests that are waiting:
- a request for a revision with no healthy pod `kick`s its watcher, and while
  requests wait the re-probe cadence is `cold_probe_frequency` (20 ms) instead of
  `PROBE_FREQUENCY` (200 ms): the issue's cold-start budget (ready → forwarded,
  p95 < 50 ms) is smaller than Go's probe period;
- a pod whose connection fails mid-request, or that never got a request (a refused
  dial; its queue-proxy's 502 marked not sent), is `quarantine`d: out of rotation at
  once, back only when a probe succeeds again, even in mesh mode `disabled` where
  ready Endpoints are otherwise trusted unprobed (Go waits for the Endpoints to change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.http.client import UpstreamPool

from .config import MESH_DISABLED, MESH_ENABLED
from .probe import ProbeResult, probe_queue_proxy
from .revision import RevisionInfo, RevKey
from .tls import CLUSTER_IP_TLS_PORT, POD_TLS_PORT, TLSMaterial, TLSUpstreamPool

__all__ = [
    "BackendManager",
    "BackendSettings",
    "Dests",
    "PoolRegistry",
    "RevisionWatcher",
    "endpoints_dests",
    "is_private_endpoints",
]

log = logging.getLogger("activator.backends")

LABEL_REVISION = "serving.knative.dev/revision"
LABEL_REVISION_UID = "serving.knative.dev/revisionUID"
LABEL_SERVICE_TYPE = "networking.internal.knative.dev/serviceType"

# Publish callback: (revision, healthy pod dests, ClusterIP dest or None).
Publish = Callable[[RevKey, frozenset[str], str | None], None]


@dataclass(frozen=True, slots=True)
class Dests:
    ready: frozenset[str] = frozenset()
    not_ready: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.ready | self.not_ready

    def became_not_ready(self, prev: Dests) -> frozenset[str]:
        return prev.ready & self.not_ready


EMPTY = Dests()


def is_private_endpoints(labels: dict[str, str]) -> bool:
    """§3.4 selector: `revisionUID` present and `serviceType=Private`."""
    return LABEL_REVISION_UID in labels and labels.get(LABEL_SERVICE_TYPE) == "Private"


def endpoints_dests(obj: dict[str, Any], port_name: str) -> Dests:
    """Ready / not-ready `ip:port` from each subset's port named `port_name` (§3.4)."""
    ready: set[str] = set()
    not_ready: set[str] = set()
    for subset in obj.get("subsets") or ():
        if not isinstance(subset, dict):
            continue
        port = None
        for p in subset.get("ports") or ():
            if isinstance(p, dict) and p.get("name") == port_name:
                port = p.get("port")
                break
        if not isinstance(port, int):
            continue
        for field, out in (("addresses", ready), ("notReadyAddresses", not_ready)):
            for addr in subset.get(field) or ():
                ip = addr.get("ip") if isinstance(addr, dict) else None
                if ip:
                    out.add(f"{ip}:{port}")
    return Dests(frozenset(ready), frozenset(not_ready))


def _split_dest(dest: str) -> tuple[str, int]:
    host, _, port = dest.rpartition(":")
    return host.strip("[]"), int(port)


class PoolRegistry:
    """One keep-alive pool per backend dest, shared by the prober and the proxy (§3.7).

    Dests stay the Endpoints' `ip:port` (the throttler's identity for a pod); with
    system-internal TLS (`tls` set) the pool behind a dest dials the queue-proxy's TLS port
    instead: `<podIP>:8112`, or `<clusterIP>:443` for a dest registered as a ClusterIP (§3.7).
    """

    def __init__(
        self,
        max_idle_per_host: int = 100,
        tls: TLSMaterial | None = None,
        pod_tls_port: int = POD_TLS_PORT,
        cluster_ip_tls_port: int = CLUSTER_IP_TLS_PORT,
    ) -> None:
        self.max_idle_per_host = max_idle_per_host
        self.tls = tls
        self.pod_tls_port = pod_tls_port
        self.cluster_ip_tls_port = cluster_ip_tls_port
        self.cluster_ips: set[str] = set()
        self.pools: dict[str, UpstreamPool] = {}
        if tls is not None:
            # New roots: new connections must verify against them (§3.7); idle ones go.
            tls.on_roots_changed = self.close

    def get(self, dest: str, namespace: str = "") -> UpstreamPool:
        pool = self.pools.get(dest)
        if pool is None or pool.closing:
            host, port = _split_dest(dest)
            if self.tls is None:
                pool = UpstreamPool(host, port, max_idle=self.max_idle_per_host)
            else:
                port = self.cluster_ip_tls_port if dest in self.cluster_ips else self.pod_tls_port
                pool = TLSUpstreamPool(host, port, self.max_idle_per_host, self.tls, namespace)
            self.pools[dest] = pool
        return pool

    def discard(self, dest: str) -> None:
        pool = self.pools.pop(dest, None)
        if pool is not None:
            pool.close()  # idle connections now; busy ones close when their request ends

    def close(self) -> None:
        for dest in list(self.pools):
            self.discard(dest)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    probe_timeout: float = 0.3
    probe_frequency: float = 0.2
    cold_probe_frequency: float = 0.02
    mesh_mode: str = "auto"
    pod_addressability: bool = False  # enable-mesh-pod-addressability: passthrough LB


class RevisionWatcher:
    """Go's revisionWatcher: health state of one revision's dests, re-evaluated on
    every Endpoints change and on a ticker while some dest is not known healthy."""

    def __init__(self, key: RevKey, endpoints_name: str, manager: BackendManager) -> None:
        self.key = key
        self.endpoints_name = endpoints_name
        self.manager = manager
        self.endpoints: dict[str, Any] = {}
        self.cur = EMPTY
        self.prev = EMPTY
        self.healthy: set[str] = set()
        # Dests taken out by `quarantine`: readmitted by a successful probe only.
        self.quarantined: set[str] = set()
        self.pods_addressable = True
        self.cluster_ip_healthy = False
        self.published: tuple[frozenset[str], str | None] | None = None
        self._wake = asyncio.Event()
        self._new_dests = False
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def set_endpoints(self, obj: dict[str, Any]) -> None:
        self.endpoints = obj
        self.endpoints_name = str((obj.get("metadata") or {}).get("name", self.endpoints_name))
        self._new_dests = True
        self._wake.set()

    def kick(self) -> None:
        self._wake.set()

    def quarantine(self, dest: str) -> None:
        """A connection to `dest` failed mid-request: stop using it until re-probed."""
        if dest in self.healthy:
            self.quarantined.add(dest)
            self.healthy.discard(dest)
            self.manager.pools.discard(dest)
            self._publish(frozenset(self.healthy), None)
            self._wake.set()

    async def close(self) -> None:
        self.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- the loop -----------------------------------------------------------------

    def _needs_tick(self) -> bool:
        everything = self.cur.all
        return bool(everything) and not (self.cluster_ip_healthy or everything == self.healthy)

    async def _run(self) -> None:
        settings = self.manager.settings
        while not self.closed:
            if self._needs_tick():
                cold = self.manager.has_waiters(self.key) and not self.healthy
                period = settings.cold_probe_frequency if cold else settings.probe_frequency
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), period)
            else:
                await self._wake.wait()
            self._wake.clear()
            if self.closed:
                return
            if self._new_dests:
                self._new_dests = False
                info = self.manager.revision_lookup(self.key)
                port_name = info.port_name if info is not None else "http"
                self.prev, self.cur = self.cur, endpoints_dests(self.endpoints, port_name)
                for gone in self.prev.all - self.cur.all:
                    self.manager.pools.discard(gone)
                self.quarantined &= self.cur.all
            try:
                await self.check(self.cur, self.prev)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("evaluating backends failed", extra={"fields": {"knative.dev/key": "/".join(self.key)}})

    # ---- one evaluation (Go's checkDests) -----------------------------------------

    async def check(self, cur: Dests, prev: Dests) -> None:
        settings = self.manager.settings
        if not cur.all:
            # Scaled to zero: forget all health state.
            self.cluster_ip_healthy = False
            self.pods_addressable = True
            self.healthy = set()
            self._publish(frozenset(), None)
            return
        if self.pods_addressable and settings.mesh_mode != MESH_ENABLED:
            reprobe = cur.became_not_ready(prev)
            if reprobe:
                self.healthy -= reprobe
            healthy, noop, not_mesh = await self._probe_pods(cur)
            if self.closed:
                return
            if not noop or reprobe:
                self.healthy = healthy
                self._publish(frozenset(healthy), None)
                return
            if healthy or not_mesh:
                return
        if settings.pod_addressability or settings.mesh_mode == MESH_DISABLED:
            return
        dest = self.manager.cluster_ip_dest(self.key, self.endpoints_name)
        if dest is None:
            return
        if self.cluster_ip_healthy:
            self._publish(cur.ready, dest)
            return
        result = await self._probe(dest)
        if self.closed:
            return
        if result.ok:
            self.pods_addressable = False
            self.cluster_ip_healthy = True
            self.healthy = set()
            self._publish(cur.ready, dest)

    async def _probe_pods(self, cur: Dests) -> tuple[set[str], bool, bool]:
        """Go's probePodIPs: (healthy set, unchanged, saw a non-mesh answer)."""
        everything = cur.all
        if everything == self.healthy:
            return self.healthy, True, False
        healthy = self.healthy & everything
        to_probe = everything - healthy
        if self.manager.settings.mesh_mode == MESH_DISABLED:
            # Mode disabled trusts Kubernetes readiness without probing (§3.4), except
            # for a quarantined pod: Kubernetes has not noticed yet what we saw fail.
            trusted_ready = cur.ready - self.quarantined
            healthy |= trusted_ready
            to_probe -= trusted_ready
        trusted = len(healthy)
        info = self.manager.revision_lookup(self.key)
        optimise = info.probe_optimisation if info is not None else True
        not_mesh = False
        if to_probe:
            ordered = sorted(to_probe)
            results = await asyncio.gather(*(self._probe(d) for d in ordered))
            for dest, result in zip(ordered, results, strict=True):
                if result.ok and (dest in cur.ready or optimise):
                    healthy.add(dest)
                    self.quarantined.discard(dest)
                not_mesh = not_mesh or result.not_mesh
        # Go: unchanged iff no probe succeeded and the set kept its size.
        unchanged = len(healthy) == trusted and len(healthy) == len(self.healthy)
        return healthy, unchanged, not_mesh

    async def _probe(self, dest: str) -> ProbeResult:
        manager = self.manager
        host = dest.encode()
        extra = b""
        if manager.settings.pod_addressability:
            host = f"{self.key[1]}-private.{self.key[0]}".encode()
            extra = b"K-Passthrough-Lb: true\r\n"
        pool = manager.pools.get(dest, self.key[0])
        return await probe_queue_proxy(pool, host, manager.settings.probe_timeout, extra)

    def _publish(self, dests: frozenset[str], cluster_ip: str | None) -> None:
        self.published = (dests, cluster_ip)
        self.manager.publish(self.key, dests, cluster_ip)


class BackendManager:
    """Routes private Endpoints / Service events to per-revision watchers."""

    def __init__(
        self,
        settings: BackendSettings,
        pools: PoolRegistry,
        publish: Publish,
        revision_lookup: Callable[[RevKey], RevisionInfo | None],
        has_waiters: Callable[[RevKey], bool],
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.publish = publish
        self.revision_lookup = revision_lookup
        self.has_waiters = has_waiters
        self.watchers: dict[RevKey, RevisionWatcher] = {}
        # (namespace, service name) -> (clusterIP, {port name: port})
        self.services: dict[tuple[str, str], tuple[str, dict[str, int]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # ---- informer events ------------------------------------------------------------

    def endpoints_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if not is_private_endpoints(labels):
            return
        rev = labels.get(LABEL_REVISION)
        if not rev:
            return
        key = (str(meta.get("namespace", "")), str(rev))
        if kind == "DELETED":
            self._drop(key)
            return
        watcher = self.watchers.get(key)
        if watcher is None:
            watcher = self.watchers[key] = RevisionWatcher(key, str(meta.get("name", "")), self)
            watcher.start()
        watcher.set_endpoints(obj)

    def service_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        skey = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "DELETED":
            self.services.pop(skey, None)
            return
        spec = obj.get("spec") or {}
        ports = {
            str(p.get("name")): int(p["port"])
            for p in spec.get("ports") or ()
            if isinstance(p, dict) and isinstance(p.get("port"), int)
        }
        self.services[skey] = (str(spec.get("clusterIP") or ""), ports)

    def revision_changed(self, key: RevKey) -> None:
        """The protocol (port name) may differ from what was assumed: re-read dests."""
        watcher = self.watchers.get(key)
        if watcher is not None and watcher.endpoints:
            watcher.set_endpoints(watcher.endpoints)

    def revision_deleted(self, key: RevKey) -> None:
        self._drop(key)

    def _drop(self, key: RevKey) -> None:
        watcher = self.watchers.pop(key, None)
        if watcher is None:
            return
        for dest in watcher.cur.all:
            self.pools.discard(dest)
        self.publish(key, frozenset(), None)
        task = asyncio.get_running_loop().create_task(watcher.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # ---- requests -------------------------------------------------------------------

    def kick(self, key: RevKey) -> None:
        watcher = self.watchers.get(key)
        if watcher is not None:
            watcher.kick()

    def quarantine(self, key: RevKey, dest: str) -> None:
        watcher = self.watchers.get(key)
        if watcher is not None:
            watcher.quarantine(dest)

    def cluster_ip_dest(self, key: RevKey, endpoints_name: str) -> str | None:
        entry = self.services.get((key[0], endpoints_name))
        if entry is None:
            return None
        cluster_ip, ports = entry
        if not cluster_ip or cluster_ip == "None":
            return None
        info = self.revision_lookup(key)
        port = ports.get(info.port_name if info is not None else "http")
        if port is None:
            return None
        dest = f"[{cluster_ip}]:{port}" if ":" in cluster_ip else f"{cluster_ip}:{port}"
        self.pools.cluster_ips.add(dest)  # its TLS pool dials :443 (§3.7)
        return dest

    async def close(self) -> None:
        watchers, self.watchers = list(self.watchers.values()), {}
        for watcher in watchers:
            await watcher.close()
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
