"""Leader election over Leases, bucket endpoints and stat forwarding (CONTRACT.md §4.10), against
the embedded Kubernetes API with short leases."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from autoscaler.bucket import BucketSet
from autoscaler.kube import KnativeAPI, call_obj
from autoscaler.leaderelection import LeaderElectionConfig, LeaseElector
from sluice.wire import Stat, WireStatMessage, encode_wire_stat_messages

from .kpa_fixtures import FAST_LEASES, NS, SYSTEM_NS, Cluster, cluster, free_port, random_loopback, until

__all__ = ["cluster"]

LEASE = "autoscaler-bucket-00-of-01"


async def test_one_leader_and_fast_handover_on_release(cluster: Cluster) -> None:
    api = KnativeAPI(cluster.api)
    a = LeaseElector(api, SYSTEM_NS, LEASE, "as-a_10.0.0.1", FAST_LEASES)
    b = LeaseElector(api, SYSTEM_NS, LEASE, "as-b_10.0.0.2", FAST_LEASES)
    ta = asyncio.create_task(a.run())
    await until(lambda: _true(a.is_leader), what="a leads")
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(1.0)  # several retry periods: b must not take a live lease
    assert a.is_leader and not b.is_leader
    assert b.holder == "as-a_10.0.0.1"
    lease = await call_obj(cluster.api_coordination.read_namespaced_lease, LEASE, SYSTEM_NS)
    assert lease["spec"]["holderIdentity"] == "as-a_10.0.0.1"
    assert lease["spec"]["leaseDurationSeconds"] == 2
    # SIGTERM path: stop renewing and release; b takes over without waiting for expiry.
    ta.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ta
    assert not a.is_leader
    await a.release()
    await until(lambda: _true(b.is_leader), timeout=1.5, what="b takes over")
    lease = await call_obj(cluster.api_coordination.read_namespaced_lease, LEASE, SYSTEM_NS)
    assert lease["spec"]["holderIdentity"] == "as-b_10.0.0.2"
    assert lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tb


async def test_leadership_expires_without_renewal(cluster: Cluster) -> None:
    """A leader that cannot renew stops acting after renew-deadline, before anyone else may take
    the lease (lease-duration): never two actors."""
    api = KnativeAPI(cluster.api)
    cfg = LeaderElectionConfig(1, lease_duration=2.0, renew_deadline=1.0, retry_period=0.2)
    a = LeaseElector(api, SYSTEM_NS, LEASE, "as-a_10.0.0.1", cfg)
    assert await a.try_acquire_or_renew()
    a._leading = True
    a._last_renew = a.monotonic()
    b = LeaseElector(api, SYSTEM_NS, LEASE, "as-b_10.0.0.2", cfg)
    assert not await b.try_acquire_or_renew()  # held and fresh
    loop = asyncio.get_running_loop()
    start = loop.time()
    # a is partitioned (no renewals); b keeps trying.
    while not await b.try_acquire_or_renew():
        assert not (a.is_leader and loop.time() - start > 1.05), "a still acts after its renew deadline"
        await asyncio.sleep(0.1)
    took = loop.time() - start
    assert 1.9 <= took <= 3.0
    assert not a.is_leader


async def _true(value: bool) -> bool:
    return value


async def test_only_the_leader_acts_and_the_follower_takes_over(cluster: Cluster) -> None:
    port = free_port()
    ips = [random_loopback(), random_loopback()]
    common: dict[str, Any] = {"leader_election": True, "leader_election_config": FAST_LEASES, "forward_port": port}
    apps = [
        await cluster.start_autoscaler(f"as-{i}", pod_ip=ip, stat_host=ip, stat_port=port, **common)
        for i, ip in enumerate(ips)
    ]
    await cluster.create_revision("ha", annotations={"autoscaling.knative.dev/min-scale": "2"})

    async def one_leader() -> bool:
        return sum(a.is_leader("default/ha") for a in apps) == 1 and await cluster.replicas("ha") == 2

    await until(one_leader, timeout=5, what="a single leader scaling to min")
    leader = next(a for a in apps if a.is_leader("default/ha"))
    follower = next(a for a in apps if a is not leader)
    assert f"{NS}/ha" in leader.kpa.revisions and leader.multiscaler.get(NS, "ha") is not None
    assert not follower.kpa.revisions and follower.multiscaler.get(NS, "ha") is None
    assert f"{NS}/ha" in leader.collector and f"{NS}/ha" not in follower.collector

    # The bucket's Service and EndpointSlice point at the leader (§4.10).
    async def bucket_endpoints() -> bool:
        try:
            eps = await call_obj(cluster.api_discovery.read_namespaced_endpoint_slice, LEASE, SYSTEM_NS)
        except Exception:
            return False
        return bool(eps["endpoints"][0]["addresses"] == [leader.options.pod_ip])

    await until(bucket_endpoints, timeout=3, what="bucket EndpointSlice")
    svc = await call_obj(cluster.core.read_namespaced_service, LEASE, SYSTEM_NS)
    assert svc["spec"]["ports"][0]["port"] == 8080 and "selector" not in svc["spec"]

    # An activator connected to the follower: its stats reach the leader's collector (§4.9).
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{follower.options.pod_ip}:{port}/") as ws,
    ):
        stat = Stat(pod_name="activator-x", average_concurrent_requests=3.0, request_count=3.0)
        await ws.send_bytes(encode_wire_stat_messages([WireStatMessage(NS, "ha", stat)]))

        async def forwarded() -> bool:
            coll = leader.collector.collection(f"{NS}/ha")
            return coll is not None and coll.concurrency.window_average(leader.clock()) > 0

        await until(forwarded, timeout=3, what="stat forwarded to the leader")
    assert follower.forwarder.forwarded >= 1

    # The leader goes away (SIGTERM: leases released); the follower takes over and acts.
    await cluster.stop_autoscaler(leader)

    async def took_over() -> bool:
        return follower.is_leader(f"{NS}/ha") and follower.multiscaler.get(NS, "ha") is not None

    await until(took_over, timeout=3, what="follower takes over")
    await cluster.custom.patch_namespaced_custom_object(
        "autoscaling.internal.knative.dev",
        "v1alpha1",
        NS,
        "podautoscalers",
        "ha",
        {"metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "3"}}},
        _content_type="application/merge-patch+json",
    )

    async def rescaled() -> bool:
        return await cluster.replicas("ha") == 3

    await until(rescaled, timeout=5, what="new leader applies min-scale 3")


async def test_buckets_split_the_keys() -> None:
    """Two buckets: keys map to exactly one bucket, stably (the ring is shared with Go, §4.10)."""
    bs = BucketSet.of_size(2)
    owners = {bs.owner(f"ns/rev-{i}") for i in range(50)}
    assert owners == {"autoscaler-bucket-00-of-02", "autoscaler-bucket-01-of-02"}
    assert all(bs.owner(f"ns/rev-{i}") == BucketSet.of_size(2).owner(f"ns/rev-{i}") for i in range(50))
