"""The verbs: get, list, watch, create, update, patch, delete, and the scale subresource.

Each public method is one atomic step on the store (the event loop runs one at a time), so
optimistic concurrency is exact: a write whose resourceVersion is not the stored one loses with
409 Conflict, and a merge/JSON patch without a resourceVersion applies to the latest version.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import errors
from .errors import APIError, Cause
from .fields import AdmissionHook, AdmissionRequest, WriteContext, check_fields, webhook_denied
from .gc import GarbageCollector
from .meta import JSONObj, generate_name_suffix, new_uid
from .patch import json_patch, merge_patch, strategic_merge
from .resources import Registry, ResourceType
from .selectors import parse_field_selector, parse_label_selector, selector_to_string
from .store import Store, Stored, TooOld, Watcher
from .strategy import (
    bump_generation,
    check_type_meta,
    mark_deleting,
    prepare_create,
    prepare_update,
    validate_object,
)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

NAMESPACES = ("", "namespaces")


@dataclass(slots=True)
class ListResult:
    items: list[Stored]
    resource_version: int
    continue_token: str
    remaining: int | None


def _without_rv(obj: JSONObj) -> JSONObj:
    meta = dict(obj["metadata"])
    meta.pop("resourceVersion", None)
    return {**obj, "metadata": meta}


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set(obj: JSONObj, dotted: str, value: Any) -> None:
    parts = dotted.strip(".").split(".")
    for part in parts[:-1]:
        nxt = obj.get(part)
        if not isinstance(nxt, dict):
            nxt = obj[part] = {}
        obj = nxt
    obj[parts[-1]] = value


class Operations:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.gc = GarbageCollector(self)
        # Validating admission (webhooks): (group, plural) -> (webhook name, hook).
        self.admission: dict[tuple[str, str], tuple[str, AdmissionHook]] = {}

    def _lookup(self, group: str, plural: str, ns: str, name: str) -> JSONObj | None:
        s = self.store.get((group, plural), ns, name)
        return s.copy() if s is not None else None

    def _admit(self, rt: ResourceType, obj: JSONObj, old: JSONObj | None) -> None:
        hook = self.admission.get(rt.group_resource)
        if hook is None:
            return
        message = hook[1](AdmissionRequest(rt, obj, old, self._lookup))
        if message:
            raise webhook_denied(hook[0], message)

    # ------------------------------------------------------------ helpers

    def _type_for(self, gr: tuple[str, str]) -> ResourceType:
        rt = self.registry.storage_type(*gr)
        assert rt is not None, gr
        return rt

    def _get(self, rt: ResourceType, ns: str, name: str) -> Stored:
        s = self.store.get(rt.group_resource, ns if rt.namespaced else "", name)
        if s is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return s

    def _check_namespace(self, rt: ResourceType, ns: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns_obj = self.store.get(NAMESPACES, "", ns)
        if ns_obj is None:
            raise errors.not_found("namespaces", "", ns)
        if ns_obj.meta.get("deletionTimestamp"):
            raise errors.forbidden_namespace_terminating(rt.plural, rt.group, name, ns)

    def write(self, rt: ResourceType, obj: JSONObj) -> Stored:
        """Store `obj`, or remove it when it is being deleted and no finalizer is left."""
        meta = obj["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not self._held_by_spec_finalizers(rt, obj)
            and not self._terminating_pod(rt, obj)
        ):
            ns, name = meta.get("namespace", ""), meta["name"]
            removed = self.store.remove(rt.group_resource, ns, name, final=obj)
            assert removed is not None
            self.gc.removed(rt, removed)
            return removed
        stored = self.store.put(rt.group_resource, obj)
        self.gc.written(rt, stored)
        return stored

    @staticmethod
    def _terminating_pod(rt: ResourceType, obj: JSONObj) -> bool:
        # A gracefully deleted pod stays, and takes status writes, until its kubelet
        # confirms with a delete of grace 0 (as on a real API server).
        grace = int(obj["metadata"].get("deletionGracePeriodSeconds") or 0)
        return rt.group == "" and rt.plural == "pods" and grace > 0

    @staticmethod
    def _held_by_spec_finalizers(rt: ResourceType, obj: JSONObj) -> bool:
        # Namespaces also wait on spec.finalizers ("kubernetes": the namespace controller).
        return rt.group == "" and rt.plural == "namespaces" and bool((obj.get("spec") or {}).get("finalizers"))

    # ------------------------------------------------------------ reads

    def get(self, rt: ResourceType, ns: str, name: str) -> Stored:
        return self._get(rt, ns, name)

    def list(
        self,
        rt: ResourceType,
        ns: str | None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(
            field_selector, ("metadata.name", "metadata.namespace", *rt.extra_field_selectors)
        )
        after = None
        list_rv = self.store.rv
        if continue_token:
            after, list_rv = self._decode_continue(continue_token)
        items: list[Stored] = []
        more = False
        remaining = 0
        from .selectors import fields_match, labels_match

        for s in self.store.items(rt.group_resource, ns if rt.namespaced else None, after):
            if not (labels_match(labels, s.obj) and fields_match(fields, s.obj)):
                continue
            if limit and len(items) >= limit:
                more = True
                remaining += 1
                continue
            items.append(s)
        token = ""
        if more:
            last = items[-1].meta
            token = self._encode_continue((last.get("namespace", ""), last["name"]), list_rv)
        # remainingItemCount is only reported for unfiltered lists, as in the real server.
        rem = remaining if more and not labels and not fields else None
        return ListResult(items, self.store.rv, token, rem)

    @staticmethod
    def _encode_continue(key: tuple[str, str], rv: int) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[tuple[str, str], int]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            ns, name = data["start"]
            return (str(ns), str(name)), int(data["rv"])
        except (binascii.Error, ValueError, KeyError, TypeError) as e:
            raise errors.bad_request(f"continue key is not valid: {e}") from None

    def watch(
        self,
        rt: ResourceType,
        ns: str | None,
        label_selector: str,
        field_selector: str,
        resource_version: str,
    ) -> Watcher:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(
            field_selector, ("metadata.name", "metadata.namespace", *rt.extra_field_selectors)
        )
        since: int | None = None
        if resource_version not in ("", "0"):
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(f'invalid resource version: "{resource_version}"') from None
        try:
            return self.store.watch(rt.group_resource, ns if rt.namespaced else None, labels, fields, since)
        except TooOld as e:
            raise errors.gone(str(e)) from None

    # ------------------------------------------------------------ create

    def create(self, rt: ResourceType, ns: str, body: Any, ctx: WriteContext | None = None) -> Stored:
        check_fields(rt, body, ctx)
        obj = check_type_meta(rt, body)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            # etcd3 store: a create carrying a resourceVersion is refused (as a 500, like the real one).
            raise APIError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(8):
                candidate = f"{meta['generateName']}{generate_name_suffix()}"
                if self.store.get(rt.group_resource, ns if rt.namespaced else "", candidate) is None:
                    meta["name"] = candidate
                    break
        name = str(meta.get("name") or "")
        prepare_create(rt, obj, new_uid())
        validate_object(rt, obj)
        self._admit(rt, obj, None)
        self._check_namespace(rt, ns, name)
        if self.store.get(rt.group_resource, ns if rt.namespaced else "", name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        stored = self.write(rt, obj)
        self.gc.drain()
        return stored

    # ------------------------------------------------------------ update / patch

    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Any,
        subresource: str | None = None,
        ctx: WriteContext | None = None,
    ) -> tuple[Stored, bool]:
        """PUT. Returns (stored, created) — created only for kinds that allow create-on-update."""
        check_fields(rt, body, ctx)
        obj = check_type_meta(rt, body)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        existing = self.store.get(rt.group_resource, ns if rt.namespaced else "", name)
        if existing is None:
            if rt.allow_create_on_update and subresource is None:
                meta["name"] = name
                meta.pop("resourceVersion", None)
                return self.create(rt, ns, obj), True  # fields were checked above
            raise errors.not_found(rt.plural, rt.group, name)
        rv = meta.get("resourceVersion")
        if not rv and not rt.allow_unconditional_update:
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [
                    Cause(
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                        "metadata.resourceVersion",
                    )
                ],
            )
        stored = self._apply_update(rt, existing, obj, subresource, rv)
        self.gc.drain()
        return stored, False

    def _apply_update(
        self, rt: ResourceType, existing: Stored, obj: JSONObj, subresource: str | None, rv: Any
    ) -> Stored:
        if rv and str(rv) != str(existing.rv):
            raise errors.stale_conflict(rt.plural, rt.group, existing.meta["name"])
        old = existing.copy()
        if rt.namespaced:
            obj["metadata"]["namespace"] = old["metadata"]["namespace"]
        new = prepare_update(rt, obj, old, subresource)
        validate_object(rt, new)
        if subresource is None:
            self._admit(rt, new, old)
        bump_generation(rt, new, old)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            # No-op writes neither bump the resourceVersion nor produce a watch event.
            return existing
        return self.write(rt, new)

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        ctx: WriteContext | None = None,
    ) -> Stored:
        existing = self._get(rt, ns, name)
        patched = self._apply_patch(rt, existing.copy(), content_type, patch)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        check_fields(rt, patched, ctx, patch=patch)
        meta = patched.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if isinstance(meta, dict) and meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        obj = check_type_meta(rt, patched)
        stored = self._apply_update(rt, existing, obj, subresource, rv)
        self.gc.drain()
        return stored

    def server_side_apply(
        self, rt: ResourceType, ns: str, name: str, body: Any, ctx: WriteContext | None = None
    ) -> tuple[Stored, bool]:
        """`kubectl apply --server-side` (application/apply-patch+yaml): creates the object, or
        merges the applied configuration into it. A simplification of server-side apply: no
        managedFields, so no conflicts between managers, and a field dropped from the applied
        configuration is kept rather than removed (plain `kubectl apply` removes it)."""
        if not isinstance(body, dict):
            raise errors.bad_request(f"Object '{rt.kind}' is not a JSON object")
        if not body.get("apiVersion") or not body.get("kind"):
            raise errors.bad_request("apiVersion and kind must be set in an applied configuration")
        raw_meta = body.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if self.store.get(rt.group_resource, ns if rt.namespaced else "", name) is None:
            body.setdefault("metadata", {})["name"] = name
            return self.create(rt, ns, body, ctx), True
        return self.patch(rt, ns, name, MERGE_PATCH, body, None, ctx), False

    def _apply_patch(self, rt: ResourceType | None, target: JSONObj, content_type: str, patch: Any) -> Any:
        if content_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise errors.bad_request("merge patch must be a JSON object")
            return merge_patch(target, patch)
        if content_type == JSON_PATCH:
            return json_patch(target, patch)
        if content_type == STRATEGIC_PATCH and (rt is None or rt.strategic_merge):
            return strategic_merge(target, patch)
        accepted = [JSON_PATCH, MERGE_PATCH]
        if rt is None or rt.strategic_merge:
            accepted.append(STRATEGIC_PATCH)
        raise errors.unsupported_media_type(content_type, accepted)

    # ------------------------------------------------------------ delete

    def delete(self, rt: ResourceType, ns: str, name: str, options: JSONObj | None = None) -> Stored:
        options = options or {}
        existing = self._get(rt, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != existing.meta.get("uid"):
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {existing.meta.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != str(existing.rv):
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: {existing.rv}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    Cause(
                        "FieldValueNotSupported",
                        f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"',
                        "propagationPolicy",
                    )
                ],
            )
        result = self.delete_object(rt, existing, policy or "Background", options.get("gracePeriodSeconds"))
        self.gc.drain()
        return result

    def delete_object(self, rt: ResourceType, existing: Stored, policy: str, grace: Any = None) -> Stored:
        obj = existing.copy()
        meta = obj["metadata"]
        if rt.group == "" and rt.plural == "namespaces":
            return self._delete_namespace(rt, existing)
        if rt.group == "" and rt.plural == "pods":
            graceful = self._graceful_pod(rt, existing, obj, grace)
            if graceful is not None:
                return graceful
            if meta.get("deletionGracePeriodSeconds"):
                meta["deletionGracePeriodSeconds"] = 0  # the kubelet's confirmation
        finalizers: list[str] = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers and self.store.dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers and self.store.dependents(meta["uid"]):
            finalizers.append("orphan")
        if finalizers:
            if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
                return existing  # already being deleted: deleting again changes nothing
            meta["finalizers"] = finalizers
            mark_deleting(rt, obj)
            return self.write(rt, obj)
        removed = self.store.remove(rt.group_resource, meta.get("namespace", ""), meta["name"])
        assert removed is not None
        self.gc.removed(rt, removed)
        return removed

    def _graceful_pod(self, rt: ResourceType, existing: Stored, obj: JSONObj, grace: Any) -> Stored | None:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        # Pods never bound to a node, or already finished, are deleted at once (pod strategy
        # CheckGracefulDelete); a bound pod waits for its kubelet to confirm with grace 0.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return None
        period = int(grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30))
        if period <= 0:
            return None
        meta = obj["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and int(current) <= period:
            return existing
        when = (datetime.now(UTC) + timedelta(seconds=period)).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["deletionTimestamp"] = when
        meta["deletionGracePeriodSeconds"] = period
        return self.store.put(rt.group_resource, obj)

    def _delete_namespace(self, rt: ResourceType, existing: Stored) -> Stored:
        obj = existing.copy()
        if not obj["metadata"].get("deletionTimestamp"):
            mark_deleting(rt, obj)
            obj.setdefault("status", {})["phase"] = "Terminating"
            existing = self.store.put(rt.group_resource, obj)
        self.gc.empty_namespace(existing.meta["name"])
        return existing

    # ------------------------------------------------------------ scale subresource

    def get_scale(self, rt: ResourceType, ns: str, name: str) -> JSONObj:
        if rt.scale is None:
            raise errors.page_not_found()
        s = self._get(rt, ns, name)
        paths = rt.scale
        selector: Any = _dig(s.obj, paths.label_selector) if paths.label_selector else None
        if paths.selector_is_object:
            selector = selector_to_string(selector)
        meta = s.meta
        scale_meta = {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        }
        status: JSONObj = {"replicas": _dig(s.obj, paths.status_replicas) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": scale_meta,
            "spec": {"replicas": _dig(s.obj, paths.spec_replicas) or 0},
            "status": status,
        }

    def update_scale(self, rt: ResourceType, ns: str, name: str, body: Any) -> JSONObj:
        if rt.scale is None:
            raise errors.page_not_found()
        if not isinstance(body, dict):
            raise errors.bad_request("Object 'Scale' is not a JSON object")
        existing = self._get(rt, ns, name)
        meta = body.get("metadata") or {}
        rv = meta.get("resourceVersion")
        if rv and str(rv) != str(existing.rv):
            raise errors.stale_conflict(rt.plural, rt.group, name)
        replicas = (body.get("spec") or {}).get("replicas")
        if replicas is None:
            replicas = 0
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                        "spec.replicas",
                    )
                ],
            )
        obj = existing.copy()
        _set(obj, rt.scale.spec_replicas, replicas)
        old = existing.copy()
        bump_generation(rt, obj, old)
        if obj != old:
            self.write(rt, obj)
        self.gc.drain()
        return self.get_scale(rt, ns, name)

    def patch_scale(self, rt: ResourceType, ns: str, name: str, content_type: str, patch: Any) -> JSONObj:
        current = self.get_scale(rt, ns, name)
        # Scale is a built-in type, so all three patch formats apply to it.
        patched = self._apply_patch(None, copy.deepcopy(current), content_type, patch)
        return self.update_scale(rt, ns, name, patched)
