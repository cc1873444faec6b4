"""Every verb through kubernetes-asyncio, and the error shapes the real server returns."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import body_of, client, deployment_body, pod_body


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = body_of(e)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == e.status
    return body


async def test_create_get_sets_server_metadata(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    created = await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "cm", "uid": "mine"}, "data": {"k": "v"}}
    )
    assert created.metadata.uid and created.metadata.uid != "mine"
    assert created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    got = await v1.read_namespaced_config_map("cm", "default")
    assert got.data == {"k": "v"} and got.metadata.resource_version == created.metadata.resource_version


async def test_resource_versions_come_from_one_global_counter(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    a = await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    b = await v1.create_namespaced_secret("default", {"metadata": {"name": "b"}})
    c = await client.CoordinationV1Api(api).create_namespaced_lease("default", {"metadata": {"name": "l"}})
    rvs = [int(x.metadata.resource_version) for x in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


async def test_get_missing_is_404_not_found(api: Any) -> None:
    with pytest.raises(ApiException) as ei:
        await client.CoreV1Api(api).read_namespaced_pod("nope", "default")
    st = status_of(ei.value)
    assert (st["code"], st["reason"]) == (404, "NotFound")
    assert st["message"] == 'pods "nope" not found'
    assert st["details"] == {"name": "nope", "kind": "pods"}


async def test_create_existing_is_409_already_exists(api: Any) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment_body("d"))
    with pytest.raises(ApiException) as ei:
        await apps.create_namespaced_deployment("default", deployment_body("d"))
    st = status_of(ei.value)
    assert (st["code"], st["reason"]) == (409, "AlreadyExists")
    assert st["message"] == 'deployments.apps "d" already exists'
    assert st["details"]["group"] == "apps"


async def test_create_in_missing_namespace_is_404(api: Any) -> None:
    with pytest.raises(ApiException) as ei:
        await client.CoreV1Api(api).create_namespaced_pod("ghost", pod_body("p"))
    assert status_of(ei.value)["message"] == 'namespaces "ghost" not found'


async def test_update_with_stale_resource_version_is_409_conflict(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"n": "0"}})
    stale_rv = cm.metadata.resource_version
    cm.data = {"n": "1"}
    updated = await v1.replace_namespaced_config_map("cm", "default", cm)
    assert int(updated.metadata.resource_version) > int(stale_rv)
    cm.data = {"n": "2"}
    cm.metadata.resource_version = stale_rv
    with pytest.raises(ApiException) as ei:
        await v1.replace_namespaced_config_map("cm", "default", cm)
    st = status_of(ei.value)
    assert (st["code"], st["reason"]) == (409, "Conflict")
    assert "the object has been modified" in st["message"]
    assert (await v1.read_namespaced_config_map("cm", "default")).data == {"n": "1"}


async def test_update_missing_is_404_but_put_creates_endpoints(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    with pytest.raises(ApiException) as ei:
        await v1.replace_namespaced_config_map("nope", "default", {"metadata": {"name": "nope"}})
    assert ei.value.status == 404
    # Endpoints allow create-on-update (AllowCreateOnUpdate in the real strategy).
    ep = await v1.replace_namespaced_endpoints("svc", "default", {"metadata": {"name": "svc"}})
    assert ep.metadata.uid


async def test_noop_update_keeps_resource_version(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "b"}})
    again = await v1.replace_namespaced_config_map("cm", "default", cm)
    assert again.metadata.resource_version == cm.metadata.resource_version


async def test_list_label_and_field_selectors(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespace({"metadata": {"name": "other"}})
    await v1.create_namespaced_pod("default", pod_body("a", {"serving.knative.dev/revision": "r1", "tier": "x"}))
    await v1.create_namespaced_pod("default", pod_body("b", {"serving.knative.dev/revision": "r2"}))
    await v1.create_namespaced_pod("other", pod_body("c", {"serving.knative.dev/revision": "r1"}))

    async def names(**kw: Any) -> list[str]:
        if "namespace" in kw:
            res = await v1.list_namespaced_pod(kw.pop("namespace"), **kw)
        else:
            res = await v1.list_pod_for_all_namespaces(**kw)
        return sorted(p.metadata.name for p in res.items)

    assert await names(namespace="default", label_selector="serving.knative.dev/revision=r1") == ["a"]
    assert await names(label_selector="serving.knative.dev/revision=r1") == ["a", "c"]
    assert await names(label_selector="serving.knative.dev/revision in (r1,r2),!tier") == ["b", "c"]
    assert await names(label_selector="serving.knative.dev/revision!=r1") == ["b"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.namespace!=default") == ["c"]
    assert await names(field_selector="status.phase=Pending,metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiException) as ei:
        await names(field_selector="spec.bogus=1")
    st = status_of(ei.value)
    assert (st["code"], st["reason"], st["message"]) == (400, "BadRequest", "field label not supported: spec.bogus")


async def test_list_limit_and_continue_pages_through_everything(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    for i in range(7):
        await v1.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await v1.list_namespaced_config_map("default", limit=3, _continue=token)
        pages += 1
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            assert page.metadata.remaining_item_count is None
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3 and seen == [f"cm-{i}" for i in range(7)]


async def test_patch_types(api: Any) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment_body("d", replicas=1))
    # dict body -> application/strategic-merge-patch+json: containers merge by name.
    patched = await apps.patch_namespaced_deployment(
        "d", "default", {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "y"}]}}}}
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["c", "side"]
    # list body -> application/json-patch+json.
    patched = await apps.patch_namespaced_deployment(
        "d", "default", [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "z"}]
    )
    assert patched.spec.template.spec.containers[0].image == "z"
    # merge patch replaces lists wholesale.
    patched = await apps.patch_namespaced_deployment(
        "d",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "o"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["only"]
    # A failed JSON-patch test op changes nothing and is 422.
    with pytest.raises(ApiException) as ei:
        await apps.patch_namespaced_deployment("d", "default", [{"op": "test", "path": "/spec/replicas", "value": 9}])
    assert ei.value.status == 422


async def test_patch_with_resource_version_is_a_precondition(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    await v1.patch_namespaced_config_map("cm", "default", {"data": {"a": "1"}})
    with pytest.raises(ApiException) as ei:
        await v1.patch_namespaced_config_map(
            "cm", "default", {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {"a": "2"}}
        )
    assert status_of(ei.value)["reason"] == "Conflict"


async def test_delete_returns_object_and_then_404(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    await v1.delete_namespaced_config_map("cm", "default")
    with pytest.raises(ApiException) as ei:
        await v1.delete_namespaced_config_map("cm", "default")
    assert ei.value.status == 404


async def test_delete_precondition_uid_mismatch_is_409(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    with pytest.raises(ApiException) as ei:
        await v1.delete_namespaced_config_map("cm", "default", body={"preconditions": {"uid": "other"}})
    assert status_of(ei.value)["reason"] == "Conflict"
    assert (await v1.read_namespaced_config_map("cm", "default")).metadata.name == "cm"


async def test_generate_name(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    a = await v1.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    b = await v1.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert a.metadata.name.startswith("gen-") and len(a.metadata.name) == 9 and a.metadata.name != b.metadata.name


async def test_invalid_name_is_422(api: Any) -> None:
    with pytest.raises(ApiException) as ei:
        await client.CoreV1Api(api).create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    st = status_of(ei.value)
    assert st["reason"] == "Invalid" and st["details"]["causes"][0]["field"] == "metadata.name"


async def test_pod_graceful_delete_when_bound_to_a_node(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    body = pod_body("bound")
    body["spec"]["nodeName"] = "local"
    await v1.create_namespaced_pod("default", body)
    await v1.create_namespaced_pod("default", pod_body("unbound"))
    await v1.delete_namespaced_pod("unbound", "default")
    await v1.delete_namespaced_pod("bound", "default")
    terminating = await v1.read_namespaced_pod("bound", "default")
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 30
    # The kubelet may still write the status of a terminating pod: it stays.
    await v1.patch_namespaced_pod_status("bound", "default", {"status": {"phase": "Running"}})
    still = await v1.read_namespaced_pod("bound", "default")
    assert still.metadata.deletion_timestamp is not None and still.status.phase == "Running"
    # The kubelet confirms with grace 0.
    await v1.delete_namespaced_pod("bound", "default", grace_period_seconds=0)
    names = [p.metadata.name for p in (await v1.list_namespaced_pod("default")).items]
    assert names == []


async def test_delete_collection(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        await v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"tier": tier}}})
    await v1.delete_collection_namespaced_config_map("default", label_selector="tier=x")
    left = [c.metadata.name for c in (await v1.list_namespaced_config_map("default")).items]
    assert left == ["c"]


async def test_namespace_delete_removes_its_content(api: Any) -> None:
    v1 = client.CoreV1Api(api)
    await v1.create_namespace({"metadata": {"name": "tmp"}})
    await v1.create_namespaced_config_map("tmp", {"metadata": {"name": "cm"}})
    await v1.delete_namespace("tmp")
    with pytest.raises(ApiException):
        await v1.read_namespace("tmp")
    assert (await v1.list_config_map_for_all_namespaces(field_selector="metadata.namespace=tmp")).items == []
