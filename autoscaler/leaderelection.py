"""Leader election over coordination.k8s.io/v1 Leases, one per bucket (CONTRACT.md §4.10;
client-go `tools/leaderelection`, Knative `pkg/leaderelection`, serving `cmd/autoscaler`).

Lease `autoscaler-bucket-<ii>-of-<nn>` in `<system-ns>`, holder `<POD_NAME>_<POD_IP>`. The
semantics are client-go's, so Go and Sluice replicas can share the leases:

- a lease held by someone else is taken over only after it has not changed for
  `leaseDurationSeconds` *as observed locally* (no clock-skew assumptions);
- the leader renews every `retry-period`; when it has not managed to renew for `renew-deadline`
  (< lease-duration) it stops acting at once — before anyone else may take the lease over —
  which is what keeps two replicas from acting on the same revision;
- on shutdown the lease is released (holder "", duration 1 s) so a successor takes over fast.

The owner of a bucket also keeps a selector-less Service and an EndpointSlice named like the
lease pointing at its own IP:8080, where other replicas (and Go ones) forward stats (§4.10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.config import Reader
from sluice.kube import ApiException

from .bucket import BucketSet, bucket_names
from .kube import KnativeAPI, call_obj, is_conflict, is_not_found

__all__ = [
    "LEADER_ELECTION_CONFIG_NAME",
    "BucketElectors",
    "LeaderElectionConfig",
    "LeaseElector",
    "holder_ip",
]

logger = logging.getLogger("autoscaler.leaderelection")

LEADER_ELECTION_CONFIG_NAME = "config-leader-election"
MAX_BUCKETS = 10
JITTER = 1.2  # client-go JitterFactor
STAT_PORT = 8080


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
    buckets: int = 1
    lease_duration: float = 60.0
    renew_deadline: float = 40.0
    retry_period: float = 10.0

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> LeaderElectionConfig:
        r = Reader(data, source=f"ConfigMap {LEADER_ELECTION_CONFIG_NAME}")
        d = cls()
        cfg = cls(
            buckets=r.int("buckets", d.buckets, minimum=1, maximum=MAX_BUCKETS),
            lease_duration=r.duration("lease-duration", d.lease_duration, minimum=0.001),
            renew_deadline=r.duration("renew-deadline", d.renew_deadline, minimum=0.001),
            retry_period=r.duration("retry-period", d.retry_period, minimum=0.001),
        )
        # client-go's own sanity rules; without them two leaders could overlap.
        if cfg.lease_duration <= cfg.renew_deadline:
            r.fail(f"lease-duration={data.get('lease-duration', '')!r}", "must be greater than renew-deadline")
        if cfg.renew_deadline <= JITTER * cfg.retry_period:
            r.fail(f"renew-deadline={data.get('renew-deadline', '')!r}", "must be greater than 1.2 x retry-period")
        r.check()
        return cfg


def format_micro_time(t: float) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e6):06d}Z"


def holder_ip(identity: str) -> str | None:
    """The IP in a `<POD_NAME>_<POD_IP>` holder identity."""
    _, sep, ip = identity.rpartition("_")
    return ip if sep and ip else None


class LeaseElector:
    """One lease, client-go LeaderElector semantics (see the module docstring)."""

    def __init__(
        self,
        api: KnativeAPI,
        namespace: str,
        name: str,
        identity: str,
        config: LeaderElectionConfig,
        *,
        on_started: Callable[[str], None] = lambda name: None,
        on_stopped: Callable[[str], None] = lambda name: None,
        on_new_leader: Callable[[str, str], None] = lambda name, holder: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.config = config
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.on_new_leader = on_new_leader
        self.clock = clock
        self.monotonic = monotonic
        self.holder = ""
        self._leading = False
        self._last_renew = -1e18  # monotonic time of the last successful acquire/renew
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._failing = False

    @property
    def is_leader(self) -> bool:
        # Time-based, not only loop-based: if renewing has been failing (or the loop is stuck in a
        # slow API call) for renew-deadline, stop acting now (§4.10: never two actors).
        return self._leading and self.monotonic() - self._last_renew < self.config.renew_deadline

    async def _get(self) -> dict[str, Any] | None:
        try:
            return await call_obj(self.api.coordination.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if is_not_found(exc):
                return None
            raise

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_at = self.monotonic()
            holder = str(spec.get("holderIdentity") or "")
            if holder != self.holder:
                self.holder = holder
                if holder:
                    self.on_new_leader(self.name, holder)

    async def try_acquire_or_renew(self) -> bool:
        now = self.clock()
        record: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": format_micro_time(now),
            "renewTime": format_micro_time(now),
            "leaseTransitions": 0,
        }
        lease = await self._get()
        if lease is None:
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": record}
            try:
                created = await call_obj(self.api.coordination.create_namespaced_lease, self.namespace, body)
            except ApiException as exc:
                if is_conflict(exc):
                    return False  # someone else created it first
                raise
            self._observe(dict(created.get("spec") or record))
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if holder and holder != self.identity and self._observed_at + duration > self.monotonic():
            return False  # held by someone else and not expired
        if holder == self.identity:
            record["acquireTime"] = spec.get("acquireTime") or record["acquireTime"]
            record["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        else:
            record["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = record
        try:
            updated = await call_obj(self.api.coordination.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as exc:
            if is_conflict(exc):
                return False
            raise
        self._observe(dict(updated.get("spec") or record))
        return True

    async def _attempt(self) -> bool:
        try:
            ok = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=self.config.renew_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:
                logger.warning("lease %s: %s (retrying every %.1fs)", self.name, exc, self.config.retry_period)
            self._failing = True
            return False
        if self._failing:
            logger.info("lease %s: API reachable again", self.name)
        self._failing = False
        return ok

    async def run(self) -> None:
        """Acquires, renews, and on losing the lease tries to acquire it again; until cancelled."""
        cfg = self.config
        try:
            while True:
                while not await self._attempt():  # noqa: ASYNC110 - polling the API is the point
                    await asyncio.sleep(cfg.retry_period * random.uniform(1.0, JITTER))
                self._last_renew = self.monotonic()
                self._leading = True
                logger.info("acquired lease %s as %s", self.name, self.identity)
                self.on_started(self.name)
                while True:
                    await asyncio.sleep(cfg.retry_period)
                    started = self.monotonic()
                    if await self._attempt():
                        self._last_renew = started
                    elif self.monotonic() - self._last_renew >= cfg.renew_deadline:
                        break
                self._leading = False
                logger.warning("lost lease %s: could not renew within %.1fs", self.name, cfg.renew_deadline)
                self.on_stopped(self.name)
        finally:
            if self._leading:
                self._leading = False
                self.on_stopped(self.name)

    async def release(self) -> None:
        """Gives the lease up if we hold it (holder "", duration 1 s), like ReleaseOnCancel."""
        try:
            lease = await self._get()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = format_micro_time(self.clock())
            spec = lease.get("spec") or {}
            lease["spec"] = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            await call_obj(self.api.coordination.replace_namespaced_lease, self.name, self.namespace, lease)
            logger.info("released lease %s", self.name)
        except Exception as exc:
            logger.warning("could not release lease %s: %s", self.name, exc)


class BucketElectors:
    """One `LeaseElector` per bucket; answers "is this replica the owner of key k?"."""

    def __init__(
        self,
        api: KnativeAPI,
        namespace: str,
        pod_name: str,
        pod_ip: str,
        config: LeaderElectionConfig,
        *,
        on_promote: Callable[[str], None] = lambda bucket: None,
        on_demote: Callable[[str], None] = lambda bucket: None,
        on_new_leader: Callable[[str, str], None] = lambda bucket, holder: None,
        manage_endpoints: bool = True,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.pod_ip = pod_ip
        self.identity = f"{pod_name}_{pod_ip}"
        self.config = config
        self.on_promote = on_promote
        self.on_demote = on_demote
        self.manage_endpoints = manage_endpoints
        self.buckets = BucketSet(bucket_names(config.buckets))
        self.electors = {
            name: LeaseElector(
                api,
                namespace,
                name,
                self.identity,
                config,
                on_started=self._started,
                on_stopped=self._stopped,
                on_new_leader=on_new_leader,
            )
            for name in self.buckets.names
        }
        self._tasks: list[asyncio.Task[None]] = []

    def bucket_of(self, key: str) -> str:
        return self.buckets.owner(key)

    def owns_bucket(self, bucket: str) -> bool:
        elector = self.electors.get(bucket)
        return elector is not None and elector.is_leader

    def is_leader(self, key: str) -> bool:
        return self.owns_bucket(self.buckets.owner(key))

    def holder(self, bucket: str) -> str:
        elector = self.electors.get(bucket)
        return elector.holder if elector is not None else ""

    def _started(self, bucket: str) -> None:
        if self.manage_endpoints:
            self._tasks.append(asyncio.create_task(self._ensure_bucket_endpoints(bucket)))
        self.on_promote(bucket)

    def _stopped(self, bucket: str) -> None:
        self.on_demote(bucket)

    async def _ensure_bucket_endpoints(self, bucket: str) -> None:
        """Service + EndpointSlice `<bucket>` -> own IP:8080, retried until they are in place."""
        delay = 0.5
        while self.owns_bucket(bucket):
            try:
                await self._apply_bucket_endpoints(bucket)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if delay == 0.5:
                    logger.warning("bucket %s: could not publish own endpoint: %s", bucket, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _apply_bucket_endpoints(self, bucket: str) -> None:
        core, discovery, ns = self.api.core, self.api.discovery, self.namespace
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": bucket, "namespace": ns, "labels": {"app": "autoscaler"}},
            "spec": {"ports": [{"name": "http", "port": STAT_PORT, "targetPort": STAT_PORT}]},
        }
        try:
            await call_obj(core.read_namespaced_service, bucket, ns)
        except ApiException as exc:
            if not is_not_found(exc):
                raise
            with contextlib.suppress(ApiException):
                await call_obj(core.create_namespaced_service, ns, service)
        address_type = "IPv6" if ":" in self.pod_ip else "IPv4"
        slice_body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": bucket,
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": bucket, "app": "autoscaler"},
            },
            "addressType": address_type,
            "endpoints": [{"addresses": [self.pod_ip], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": STAT_PORT, "protocol": "TCP"}],
        }
        try:
            existing = await call_obj(discovery.read_namespaced_endpoint_slice, bucket, ns)
        except ApiException as exc:
            if not is_not_found(exc):
                raise
            await call_obj(discovery.create_namespaced_endpoint_slice, ns, slice_body)
            return
        if existing.get("endpoints") != slice_body["endpoints"] or existing.get("ports") != slice_body["ports"]:
            slice_body["metadata"]["resourceVersion"] = (existing.get("metadata") or {}).get("resourceVersion")
            await call_obj(discovery.replace_namespaced_endpoint_slice, bucket, ns, slice_body)

    def start(self) -> None:
        for elector in self.electors.values():
            self._tasks.append(asyncio.create_task(elector.run(), name=f"elector {elector.name}"))

    async def stop(self, release: bool = True) -> None:
        leading = [e for e in self.electors.values() if e.is_leader]
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if release:
            await asyncio.gather(*(e.release() for e in leading))
