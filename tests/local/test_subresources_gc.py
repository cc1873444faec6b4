"""Deployment scale/status subresources, ownerReference cascading and finalizers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import PA_GROUP, PA_PLURAL, PA_VERSION, client, deployment_body, pa_body


async def test_deployment_scale_subresource(api: Any) -> None:
    apps = client.AppsV1Api(api)
    dep = await apps.create_namespaced_deployment("default", deployment_body("rev-deployment"))
    assert dep.spec.replicas == 1 and dep.metadata.generation == 1  # defaulted, as the real server does
    scale = await apps.read_namespaced_deployment_scale("rev-deployment", "default")
    assert (scale.spec.replicas, scale.status.selector) == (1, "app=rev-deployment")
    # The autoscaler's exact write (CONTRACT.md §4.2): a JSON patch on /scale.
    scale = await apps.patch_namespaced_deployment_scale(
        "rev-deployment", "default", [{"op": "add", "path": "/spec/replicas", "value": 0}]
    )
    assert scale.spec.replicas == 0
    dep = await apps.read_namespaced_deployment("rev-deployment", "default")
    assert dep.spec.replicas == 0 and dep.metadata.generation == 2
    scale.spec.replicas = 5
    await apps.replace_namespaced_deployment_scale("rev-deployment", "default", scale)
    assert (await apps.read_namespaced_deployment("rev-deployment", "default")).spec.replicas == 5
    # A stale resourceVersion on a Scale PUT conflicts.
    scale.spec.replicas = 6
    with pytest.raises(ApiException) as ei:
        await apps.replace_namespaced_deployment_scale("rev-deployment", "default", scale)
    assert ei.value.status == 409
    with pytest.raises(ApiException) as ei:
        await apps.patch_namespaced_deployment_scale("rev-deployment", "default", {"spec": {"replicas": -1}})
    assert ei.value.status == 422


async def test_deployment_status_subresource(api: Any) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment_body("d"))
    st = await apps.patch_namespaced_deployment_status(
        "d", "default", {"status": {"readyReplicas": 1, "replicas": 1}, "spec": {"replicas": 7}}
    )
    assert st.status.ready_replicas == 1 and st.spec.replicas == 1 and st.metadata.generation == 1
    main = await apps.patch_namespaced_deployment("d", "default", {"status": {"readyReplicas": 9}})
    assert main.status.ready_replicas == 1
    scale = await apps.read_namespaced_deployment_scale("d", "default")
    assert scale.status.replicas == 1


async def test_pod_status_subresource(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_pod(
        "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}
    )
    assert (await v1.read_namespaced_pod("p", "default")).status.phase == "Pending"
    st = await v1.patch_namespaced_pod_status(
        "p",
        "default",
        {
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.5",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            }
        },
    )
    assert st.status.pod_ip == "127.0.0.5"
    # Strategic merge merges conditions by type.
    st = await v1.patch_namespaced_pod_status(
        "p", "default", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    assert {c.type: c.status for c in st.status.conditions} == {"Ready": "False", "PodScheduled": "True"}
    listed = await v1.list_namespaced_pod("default", field_selector="status.podIP=127.0.0.5")
    assert [p.metadata.name for p in listed.items] == ["p"]


def owner_ref(obj: dict[str, Any], block: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": block,
    }


async def _pa_with_children(api: Any) -> tuple[dict[str, Any], Any]:
    c = client.CustomObjectsApi(api)
    pa = await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("rev"))
    v1 = client.CoreV1Api(api)
    for name in ("rev", "rev-private"):
        await v1.create_namespaced_service(
            "default",
            {"metadata": {"name": name, "ownerReferences": [owner_ref(pa)]}, "spec": {"ports": [{"port": 80}]}},
        )
    return pa, v1


async def test_background_cascade_deletes_dependents(api: Any) -> None:
    pa, v1 = await _pa_with_children(api)
    keep = await v1.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": "two-owners",
                "ownerReferences": [
                    owner_ref(pa),
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "name": "default",
                        "uid": (await v1.read_namespace("default")).metadata.uid,
                    },
                ],
            }
        },
    )
    assert keep.metadata.owner_references
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev"
    )
    assert (await v1.list_namespaced_service("default")).items == []
    # A dependent with another live owner survives and only loses the dead reference.
    left = await v1.read_namespaced_config_map("two-owners", "default")
    assert [r.kind for r in left.metadata.owner_references] == ["Namespace"]


async def test_orphan_keeps_dependents(api: Any) -> None:
    _, v1 = await _pa_with_children(api)
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev", propagation_policy="Orphan"
    )
    svcs = (await v1.list_namespaced_service("default")).items
    assert sorted(s.metadata.name for s in svcs) == ["rev", "rev-private"]
    assert all(not s.metadata.owner_references for s in svcs)
    with pytest.raises(ApiException):
        await client.CustomObjectsApi(api).get_namespaced_custom_object(
            PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev"
        )


async def test_foreground_waits_for_blocking_dependents(api: Any) -> None:
    _, v1 = await _pa_with_children(api)
    c = client.CustomObjectsApi(api)
    # A finalizer on one dependent holds the owner in foreground deletion.
    await v1.patch_namespaced_service("rev", "default", {"metadata": {"finalizers": ["example.com/hold"]}})
    await c.delete_namespaced_custom_object(
        PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev", propagation_policy="Foreground"
    )
    owner = await c.get_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev")
    assert owner["metadata"]["deletionTimestamp"] and "foregroundDeletion" in owner["metadata"]["finalizers"]
    held = await v1.read_namespaced_service("rev", "default")
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException):
        await v1.read_namespaced_service("rev-private", "default")
    # Releasing the dependent's finalizer lets both go.
    await v1.patch_namespaced_service(
        "rev", "default", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/hold"]}}
    )
    with pytest.raises(ApiException):
        await v1.read_namespaced_service("rev", "default")
    with pytest.raises(ApiException):
        await c.get_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev")


async def test_finalizers_hold_deletion_until_removed(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "f", "finalizers": ["a/b", "c/d"]}})
    await v1.delete_namespaced_config_map("f", "default")
    cm = await v1.read_namespaced_config_map("f", "default")
    assert cm.metadata.deletion_timestamp is not None
    cm.metadata.finalizers = ["a/b", "c/d", "new/one"]
    with pytest.raises(ApiException) as ei:
        await v1.replace_namespaced_config_map("f", "default", cm)
    assert ei.value.status == 422  # no new finalizers on an object being deleted
    cm.metadata.finalizers = ["c/d"]
    await v1.replace_namespaced_config_map("f", "default", cm)
    assert (await v1.read_namespaced_config_map("f", "default")).metadata.finalizers == ["c/d"]
    await v1.patch_namespaced_config_map("f", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as ei:
        await v1.read_namespaced_config_map("f", "default")
    assert ei.value.status == 404


async def test_dependent_of_a_missing_owner_is_collected(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-dead-beef-0000-000000000000"}
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "orphaned", "ownerReferences": [ref]}})
    await asyncio.sleep(0)
    with pytest.raises(ApiException):
        await v1.read_namespaced_config_map("orphaned", "default")
