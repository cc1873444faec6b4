"""OpenAPI v3 documents (`/openapi/v3` and `/openapi/v3/<api|apis/group>/<version>`).

kubectl uses them for three things: whether the server takes `fieldValidation` (the PATCH
operation of the kind lists the query parameter: then kubectl leaves validation to the server
instead of downloading the v2 document), `kubectl explain`, and the patch strategy of `apply`.
Custom resources are described by their CRD's structural schema, as apiextensions-apiserver
publishes them; built-in kinds by their type metadata only (kubectl carries their Go types).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

_OBJECT_META_SCHEMA: dict[str, Any] = {
    "description": "ObjectMeta is metadata that all persisted resources must have.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "generateName": {"type": "string", "description": "Prefix of a server-generated name."},
        "namespace": {"type": "string", "description": "The namespace the object lives in."},
        "uid": {"type": "string", "description": "Unique in time and space (server-set)."},
        "resourceVersion": {"type": "string", "description": "Opaque version for optimistic concurrency."},
        "generation": {"type": "integer", "format": "int64", "description": "The generation of the desired state."},
        "creationTimestamp": {"type": "string", "format": "date-time", "description": "When it was created."},
        "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When it will be deleted."},
        "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
        "finalizers": {"type": "array", "items": {"type": "string", "default": ""}},
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "managedFields": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "selfLink": {"type": "string"},
    },
}

_BUILTIN_PACKAGES = {"": "io.k8s.api.core", "apps": "io.k8s.api.apps"}


def schema_name(rt: ResourceType) -> str:
    if rt.custom:
        return ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"
    pkg = _BUILTIN_PACKAGES.get(rt.group) or "io.k8s.api." + rt.group.split(".")[0]
    return f"{pkg}.{rt.version}.{rt.kind}"


def _gvk(rt: ResourceType) -> dict[str, str]:
    return {"group": rt.group, "kind": rt.kind, "version": rt.version}


def _kind_schema(rt: ResourceType) -> dict[str, Any]:
    if rt.schema is not None:
        out = copy.deepcopy(rt.schema)
    else:
        # Built-in kinds are described down to their top-level sections only.
        out = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": f"{rt.kind} (built-in)"}
        out["properties"] = {
            part: {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": f"{rt.kind} {part}."}
            for part in (("spec", "status") if rt.has_status else ())
        }
    props = out.setdefault("properties", {})
    props["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource."}
    props["metadata"] = {
        "allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}],
        "description": "Standard object's metadata.",
    }
    out["x-kubernetes-group-version-kind"] = [_gvk(rt)]
    return out


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string", "uniqueItems": True}}


def _operation(rt: ResourceType, action: str, op_id: str, write: bool) -> dict[str, Any]:
    params = [_param("dryRun"), _param("fieldManager")]
    if write:
        params.append(_param("fieldValidation"))
    ref = {"$ref": f"#/components/schemas/{schema_name(rt)}"}
    return {
        "operationId": op_id,
        "parameters": params if write else [],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }


def _paths(rt: ResourceType) -> dict[str, Any]:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = f"{base}/namespaces/{{namespace}}" if rt.namespaced else base
    op = rt.kind
    collection = f"{scope}/{rt.plural}"
    item = f"{collection}/{{name}}"
    name_params = [_param("name", "path", True)] + ([_param("namespace", "path", True)] if rt.namespaced else [])
    coll_params = [_param("namespace", "path", True)] if rt.namespaced else []
    paths: dict[str, Any] = {
        collection: {"get": _operation(rt, "list", f"list{op}", False), "parameters": coll_params},
        item: {"get": _operation(rt, "get", f"read{op}", False), "parameters": name_params},
    }
    if rt.view_of is None:  # views are read-only
        paths[collection]["post"] = _operation(rt, "post", f"create{op}", True)
        paths[item]["put"] = _operation(rt, "put", f"replace{op}", True)
        paths[item]["patch"] = _operation(rt, "patch", f"patch{op}", True)
        paths[item]["delete"] = _operation(rt, "delete", f"delete{op}", False)
    return paths


class OpenAPI:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._docs: dict[str, bytes] | None = None

    def _build(self) -> dict[str, bytes]:
        docs: dict[str, dict[str, Any]] = {}
        for rt in self.registry.types():
            key = f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"
            doc = docs.setdefault(
                key,
                {
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": "v1.32.0"},
                    "paths": {},
                    "components": {"schemas": {OBJECT_META: _OBJECT_META_SCHEMA}},
                },
            )
            doc["paths"].update(_paths(rt))
            doc["components"]["schemas"][schema_name(rt)] = _kind_schema(rt)
        return {k: json.dumps(v, separators=(",", ":")).encode() for k, v in docs.items()}

    def documents(self) -> dict[str, bytes]:
        if self._docs is None:
            self._docs = self._build()
        return self._docs

    def v3_index(self) -> dict[str, Any]:
        paths = {}
        for key, body in self.documents().items():
            digest = hashlib.sha512(body).hexdigest().upper()[:128]
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        return {"paths": paths}

    def v3_document(self, key: str) -> bytes | None:
        return self.documents().get(key)
