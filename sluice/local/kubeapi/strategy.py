"""Per-kind write rules (the REST "strategies" of the real server).

`prepare_create` / `prepare_update` decide which parts of a client's object are kept, the way
kube-apiserver's strategies do: server-owned metadata is never taken from the client, a write to
the main resource keeps the stored status when a status subresource exists, a write to
`/status` keeps everything but the status, and `metadata.generation` moves only when the spec
(for custom resources: anything but metadata and status) changes.
"""

from __future__ import annotations

import copy
from typing import Any

from . import schema as schemas
from .errors import APIError, Cause, bad_request, invalid
from .meta import OBJECT_META_FIELDS, JSONObj, now_rfc3339, validate_meta, validate_name
from .resources import ResourceType
from .selectors import labels_match, parse_label_selector, selector_to_string


def check_type_meta(rt: ResourceType, body: Any) -> JSONObj:
    if not isinstance(body, dict):
        raise bad_request(f"Object '{rt.kind}' is not a JSON object")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
        )
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise bad_request("metadata must be an object")
    body["apiVersion"], body["kind"] = rt.api_version, rt.kind
    meta = body.setdefault("metadata", {})
    for k in [k for k in meta if k not in OBJECT_META_FIELDS]:
        del meta[k]
    meta.pop("managedFields", None)
    meta.pop("selfLink", None)
    return body


def _spec_part(rt: ResourceType, obj: JSONObj) -> Any:
    if rt.custom:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return obj.get("spec")


def apply_builtin_defaults(rt: ResourceType, obj: JSONObj) -> None:
    if rt.group == "apps" and rt.plural in ("deployments", "replicasets"):
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and spec.get("replicas") is None:
            # Defaulted by SetDefaults_Deployment: an unset replica count means 1.
            spec["replicas"] = 1
    if rt.plural == "namespaces" and rt.group == "":
        meta = obj["metadata"]
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})


def _builtin_causes(rt: ResourceType, obj: JSONObj) -> list[Cause]:
    causes: list[Cause] = []
    raw_spec = obj.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    if rt.group == "" and rt.plural == "pods":
        containers = spec.get("containers") if isinstance(spec, dict) else None
        if not containers:
            causes.append(Cause("FieldValueRequired", "Required value", "spec.containers"))
    if rt.group == "apps" and rt.plural in ("deployments", "replicasets"):
        sel = spec.get("selector") if isinstance(spec, dict) else None
        if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
            causes.append(Cause("FieldValueRequired", "Required value", "spec.selector"))
        else:
            tmpl_labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
            try:
                reqs = parse_label_selector(selector_to_string(sel))
            except APIError:
                reqs = []
            if not labels_match(reqs, {"metadata": {"labels": tmpl_labels}}):
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {tmpl_labels!r}: `selector` does not match template `labels`",
                        "spec.template.metadata.labels",
                    )
                )
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        if isinstance(replicas, int) and replicas < 0:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                    "spec.replicas",
                )
            )
        elif replicas is not None and not isinstance(replicas, int):
            causes.append(Cause("FieldValueTypeInvalid", "Invalid value: must be an integer", "spec.replicas"))
    return causes


def validate_object(rt: ResourceType, obj: JSONObj) -> None:
    """Prune, default and validate in place; raise 422 Invalid with every cause."""
    meta = obj["metadata"]
    causes = validate_name(meta.get("name"), rt.name_is_dns_label) + validate_meta(meta)
    if rt.schema is not None:
        schemas.prune(obj, rt.schema)
        schemas.apply_defaults(obj, rt.schema)
        causes += schemas.validate(obj, rt.schema)
    else:
        if rt.top_fields:
            # Decoding into the Go type drops what it does not know (reported by fields.py first).
            known = {"apiVersion", "kind", "metadata", *rt.top_fields}
            for key in [k for k in obj if k not in known]:
                del obj[key]
        causes += _builtin_causes(rt, obj)
    if causes:
        raise invalid(rt.kind, rt.group, str(meta.get("name") or meta.get("generateName") or ""), causes)


def prepare_create(rt: ResourceType, obj: JSONObj, uid: str) -> None:
    meta = obj["metadata"]
    for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(k, None)
    meta["uid"] = uid
    meta["creationTimestamp"] = now_rfc3339()
    if rt.tracks_generation:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if rt.has_status:
        if rt.custom:
            # CRs with a status subresource: status can only be written through /status.
            obj.pop("status", None)
        elif rt.initial_status is not None:
            obj["status"] = copy.deepcopy(rt.initial_status)
    apply_builtin_defaults(rt, obj)


def prepare_update(rt: ResourceType, new: JSONObj, old: JSONObj, subresource: str | None) -> JSONObj:
    """Return the object to store for a PUT (or a patched object) against `old`."""
    old_meta = old["metadata"]
    if subresource == "status":
        result = copy.deepcopy(old)
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        return result
    meta = new["metadata"]
    for k in (
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ):
        if k in old_meta:
            meta[k] = old_meta[k]
        else:
            meta.pop(k, None)
    if rt.has_status:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    if old_meta.get("deletionTimestamp"):
        added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
        if added:
            raise invalid(
                rt.kind,
                rt.group,
                old_meta["name"],
                [
                    Cause(
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted, "
                        f"found new finalizers {added!r}",
                        "metadata.finalizers",
                    )
                ],
            )
    if rt.plural in ("deployments", "replicasets"):
        apply_builtin_defaults(rt, new)
    return new


def bump_generation(rt: ResourceType, new: JSONObj, old: JSONObj) -> None:
    if rt.tracks_generation and _spec_part(rt, new) != _spec_part(rt, old):
        new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1


def mark_deleting(rt: ResourceType, obj: JSONObj, grace: int = 0, when: str | None = None) -> None:
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = when or now_rfc3339()
        meta["deletionGracePeriodSeconds"] = grace
        # rest.BeforeDelete: graceful deletion bumps a tracked generation.
        if rt.tracks_generation and meta.get("generation"):
            meta["generation"] = int(meta["generation"]) + 1
