"""Knative CRDs loaded from their YAML: discovery, validation (422), pruning, status subresource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.local.kubeapi import EmbeddedAPIServer

from .conftest import CRD_DIR, PA_GROUP, PA_PLURAL, PA_VERSION, body_of, client, pa_body


def co(api: Any) -> Any:
    return client.CustomObjectsApi(api)


async def test_discovery_lists_knative_resources(api: Any) -> None:
    groups = await client.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {
        "apps",
        "coordination.k8s.io",
        "discovery.k8s.io",
        PA_GROUP,
        "serving.knative.dev",
        "networking.internal.knative.dev",
    } <= names
    res = await co(api).get_api_resources(PA_GROUP, PA_VERSION)
    by_name = {r.name: r for r in res.resources}
    assert by_name["podautoscalers"].kind == "PodAutoscaler"
    assert set(by_name["podautoscalers"].short_names) == {"kpa", "pa"}
    assert by_name["podautoscalers"].namespaced is True
    assert "podautoscalers/status" in by_name and "metrics/status" in by_name
    core = await client.CoreV1Api(api).get_api_resources()
    core_names = {r.name for r in core.resources}
    assert {
        "pods",
        "pods/status",
        "services",
        "endpoints",
        "configmaps",
        "secrets",
        "events",
        "namespaces",
    } <= core_names
    apps = await client.AppsV1Api(api).get_api_resources()
    scale = next(r for r in apps.resources if r.name == "deployments/scale")
    assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")


async def test_invalid_pa_is_422_with_causes(api: Any) -> None:
    body = pa_body("bad", containerConcurrency="ten")
    del body["spec"]["protocolType"]
    with pytest.raises(ApiException) as ei:
        await co(api).create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, body)
    st = body_of(ei.value)
    assert (st["code"], st["reason"]) == (422, "Invalid")
    assert st["details"]["kind"] == "PodAutoscaler" and st["details"]["group"] == PA_GROUP
    causes = {c["field"]: c for c in st["details"]["causes"]}
    assert causes["spec.protocolType"]["reason"] == "FieldValueRequired"
    assert causes["spec.containerConcurrency"]["reason"] == "FieldValueTypeInvalid"
    assert st["message"].startswith(f'PodAutoscaler.{PA_GROUP} "bad" is invalid: [')


async def test_unknown_fields_are_pruned_and_status_dropped_on_create(api: Any) -> None:
    body = pa_body("pa", unknownSpecField=1)
    body["metadata"]["bogusMeta"] = "x"
    body["topLevelJunk"] = {"a": 1}
    body["status"] = {"serviceName": "x", "metricsServiceName": "y", "desiredScale": 3}
    created = await co(api).create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, body)
    assert "unknownSpecField" not in created["spec"]
    assert "topLevelJunk" not in created and "bogusMeta" not in created["metadata"]
    assert "status" not in created  # the status subresource owns status
    assert created["metadata"]["generation"] == 1
    # scaleTargetRef has no unknown-field preservation either.
    assert set(created["spec"]["scaleTargetRef"]) == {"apiVersion", "kind", "name"}


async def test_status_subresource_separates_spec_and_status(api: Any) -> None:
    c = co(api)
    pa = await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("pa"))
    # Writing status through /status ignores spec changes and keeps generation.
    pa["status"] = {"serviceName": "pa", "metricsServiceName": "pa-private", "desiredScale": 2}
    pa["spec"]["reachability"] = "Reachable"
    st = await c.replace_namespaced_custom_object_status(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", pa)
    assert st["status"]["desiredScale"] == 2 and "reachability" not in st["spec"]
    assert st["metadata"]["generation"] == 1
    # Writing the main resource ignores status but bumps generation on a spec change.
    st["spec"]["reachability"] = "Reachable"
    st["status"]["desiredScale"] = 99
    main = await c.replace_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", st)
    assert main["status"]["desiredScale"] == 2 and main["spec"]["reachability"] == "Reachable"
    assert main["metadata"]["generation"] == 2
    # A label change is not a spec change.
    main["metadata"]["labels"] = {"x": "y"}
    labelled = await c.replace_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", main)
    assert labelled["metadata"]["generation"] == 2


async def test_status_is_validated_against_the_schema(api: Any) -> None:
    c = co(api)
    pa = await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("pa"))
    pa["status"] = {"desiredScale": 1}  # serviceName and metricsServiceName are required
    with pytest.raises(ApiException) as ei:
        await c.replace_namespaced_custom_object_status(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", pa)
    fields = {x["field"] for x in body_of(ei.value)["details"]["causes"]}
    assert fields == {"status.serviceName", "status.metricsServiceName"}


async def test_custom_resource_put_requires_resource_version(api: Any) -> None:
    c = co(api)
    pa = await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("pa"))
    del pa["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as ei:
        await c.replace_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", pa)
    st = body_of(ei.value)
    assert st["code"] == 422 and st["details"]["causes"][0]["field"] == "metadata.resourceVersion"


async def test_custom_resource_patch_types(api: Any) -> None:
    c = co(api)
    await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("pa"))
    merged = await c.patch_namespaced_custom_object_status(
        PA_GROUP,
        PA_VERSION,
        "default",
        PA_PLURAL,
        "pa",
        {"status": {"serviceName": "s", "metricsServiceName": "m", "actualScale": 1}},
        _content_type="application/merge-patch+json",
    )
    assert merged["status"]["actualScale"] == 1
    jp = await c.patch_namespaced_custom_object(
        PA_GROUP,
        PA_VERSION,
        "default",
        PA_PLURAL,
        "pa",
        [{"op": "add", "path": "/spec/containerConcurrency", "value": 10}],
    )
    assert jp["spec"]["containerConcurrency"] == 10 and jp["metadata"]["generation"] == 2
    # Strategic merge is refused for custom resources, as by the real server.
    with pytest.raises(ApiException) as ei:
        await c.patch_namespaced_custom_object(
            PA_GROUP,
            PA_VERSION,
            "default",
            PA_PLURAL,
            "pa",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert body_of(ei.value)["reason"] == "UnsupportedMediaType" and ei.value.status == 415
    # A dict sent as a JSON patch (CustomObjectsApi's default content type) is a 400, as on a real server.
    with pytest.raises(ApiException) as ei:
        await c.patch_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", {"spec": {}})
    assert ei.value.status == 400


async def test_patch_making_object_invalid_is_422(api: Any) -> None:
    c = co(api)
    await c.create_namespaced_custom_object(PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("pa"))
    with pytest.raises(ApiException) as ei:
        await c.patch_namespaced_custom_object(
            PA_GROUP, PA_VERSION, "default", PA_PLURAL, "pa", [{"op": "remove", "path": "/spec/protocolType"}]
        )
    assert ei.value.status == 422


async def test_sks_and_metric_and_revision_roundtrip(api: Any) -> None:
    c = co(api)
    sks = {
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "ServerlessService",
        "metadata": {"name": "rev"},
        "spec": {
            "mode": "Proxy",
            "numActivators": 2,
            "protocolType": "http1",
            "objectRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rev-deployment"},
        },
    }
    out = await c.create_namespaced_custom_object(
        "networking.internal.knative.dev", "v1alpha1", "default", "serverlessservices", sks
    )
    assert out["spec"]["mode"] == "Proxy"
    metric = {
        "apiVersion": f"{PA_GROUP}/v1alpha1",
        "kind": "Metric",
        "metadata": {"name": "rev"},
        "spec": {"stableWindow": 60_000_000_000, "panicWindow": 6_000_000_000, "scrapeTarget": "rev-private"},
    }
    out = await c.create_namespaced_custom_object(PA_GROUP, "v1alpha1", "default", "metrics", metric)
    assert out["spec"]["stableWindow"] == 60_000_000_000
    listed = await c.list_namespaced_custom_object(PA_GROUP, "v1alpha1", "default", "metrics")
    assert listed["kind"] == "MetricList" and [i["metadata"]["name"] for i in listed["items"]] == ["rev"]


async def test_extra_crd_file_and_scale_subresource(tmp_path: Path) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"},
                    },
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 0},
                                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                    },
                                },
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }
    path = tmp_path / "widget.yaml"
    import yaml

    path.write_text(yaml.safe_dump(crd))
    async with EmbeddedAPIServer(crd_paths=[CRD_DIR, path]) as srv:
        from sluice.local.kubeapi import kube_client_from_kubeconfig

        api = await kube_client_from_kubeconfig(srv.write_kubeconfig(tmp_path / "kc"))
        c = client.CustomObjectsApi(api)
        w = await c.create_cluster_custom_object(
            "example.com",
            "v1",
            "widgets",
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}},
        )
        assert w["spec"]["color"] == "red"  # schema default applied
        with pytest.raises(ApiException) as ei:
            await c.create_cluster_custom_object(
                "example.com",
                "v1",
                "widgets",
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w2"},
                    "spec": {"color": "green", "size": -1},
                },
            )
        reasons = sorted(x["reason"] for x in body_of(ei.value)["details"]["causes"])
        assert reasons == ["FieldValueInvalid", "FieldValueNotSupported"]
        scale = await c.patch_cluster_custom_object_scale(
            "example.com", "v1", "widgets", "w", [{"op": "replace", "path": "/spec/replicas", "value": 4}]
        )
        assert scale["spec"]["replicas"] == 4
        got = await c.get_cluster_custom_object("example.com", "v1", "widgets", "w")
        assert got["spec"]["size"] == 4 and got["metadata"]["generation"] == 2
        await api.close()
