"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge is what kubectl and kubernetes-asyncio send by default for built-in kinds
(a dict body goes out as `application/strategic-merge-patch+json`). The real server knows each
list's patch strategy from Go struct tags; `MERGE_KEYS` carries the tags for the fields of the
kinds this server serves (PodSpec, Service, Deployment, ObjectMeta, conditions). Lists without a
tag are replaced wholesale, as the real server does.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import APIError, Cause, bad_request

JSONPatchOp = dict[str, Any]

# (parent field, list field) or list field alone -> patchMergeKey. The parent disambiguates
# `ports` (containerPort in a container, port in a ServiceSpec).
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",
    ("env",): "name",
    ("volumes",): "name",
    ("volumeMounts",): "mountPath",
    ("volumeDevices",): "devicePath",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("topologySpreadConstraints",): "topologyKey",
    ("conditions",): "type",
    ("ownerReferences",): "uid",
    ("resourceClaims",): "name",
    ("schedulingGates",): "name",
    ("containerStatuses",): "name",
    ("initContainerStatuses",): "name",
    ("podIPs",): "ip",
}
# Primitive lists whose strategy is "merge" (union) rather than replace.
MERGE_PRIMITIVE_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- JSON patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _patch_failed(f'invalid JSON pointer "{path}"')
    return [_unescape(t) for t in path.split("/")[1:]] if path else []


def _patch_failed(message: str) -> APIError:
    # apiserver's patcher turns an Apply() error into a 422 generic server response.
    return APIError(
        422,
        "Invalid",
        f"the server rejected our request due to an error in our request: {message}",
        {"causes": [Cause("UnexpectedServerResponse", message).to_dict()]},
    )


def _container(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise _patch_failed(f'doc is missing path: "{path}": missing value')
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    return _container(doc, tokens, path)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _patch_failed(f'add operation does not apply: doc is missing path: "{path}"')
    else:
        raise _patch_failed(f'add operation does not apply: doc is missing path: "{path}"')
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _patch_failed("unable to remove the whole document")
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise _patch_failed(f'remove operation does not apply: doc is missing path: "{path}"')
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise bad_request("Unexpected kind: missing op")
        kind, path, src = op["op"], str(op.get("path", "")), str(op.get("from", ""))
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _patch_failed(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- strategic merge


def _merge_key(path: tuple[str, ...]) -> str | None:
    if len(path) >= 2 and path[-2:] in MERGE_KEYS:
        return MERGE_KEYS[path[-2:]]
    if path and (path[-1],) in MERGE_KEYS:
        return MERGE_KEYS[(path[-1],)]
    return None


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        if not path:
            raise bad_request("strategic merge patch must be a JSON object")
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    deletes: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys" or key == "$patch":
            continue  # ordering hints and key retention do not change content we keep
        if key.startswith("$deleteFromPrimitiveList/"):
            deletes[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, (*path, key))
        else:
            result[key] = strategic_merge(result.get(key), value, (*path, key))
    for key, values in deletes.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    return result


def _merge_list(current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    cur = list(current) if isinstance(current, list) else []
    if path[-1] in MERGE_PRIMITIVE_LISTS:
        return cur + [v for v in patch if v not in cur]
    key = _merge_key(path)
    if key is None or not all(isinstance(p, dict) for p in patch):
        # No patchStrategy=merge tag: the whole list is replaced (minus directive markers).
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if p.get("$patch") != "replace"]
    out = list(cur)
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(copy.deepcopy(item))
        else:
            out[idx] = strategic_merge(out[idx], item, path)
    return out
