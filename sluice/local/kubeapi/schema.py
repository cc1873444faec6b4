"""Structural OpenAPI v3 schemas of CRDs: pruning, defaulting and validation.

Mirrors what apiextensions-apiserver does to a custom resource on create/update, in its order:
unknown fields are pruned (silently, as the real server does by default), `default`s are
applied, then the object is validated and every failure becomes a `Status` cause with the
field path and the message text kube-openapi produces.
"""

from __future__ import annotations

import copy
import json
import math
import re
from functools import lru_cache
from typing import Any

from .errors import Cause
from .meta import OBJECT_META_FIELDS

Schema = dict[str, Any]

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    # field.Invalid prints the value Go-style; for scalars JSON is the closest rendering.
    if isinstance(value, dict | list):
        return '"' + _type_name(value) + '"'
    return json.dumps(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


# ---------------------------------------------------------------- pruning


def prune(obj: Any, schema: Schema, root: bool = True) -> None:
    """Drop, in place, every field the schema does not specify (structural pruning)."""
    if isinstance(obj, dict):
        if root or schema.get("x-kubernetes-embedded-resource"):
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                for k in [k for k in meta if k not in OBJECT_META_FIELDS]:
                    del meta[k]
        props: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key in list(obj):
            if (root or schema.get("x-kubernetes-embedded-resource")) and key in _ROOT_KEEP:
                continue
            if key in props:
                prune(obj[key], props[key], root=False)
            elif isinstance(additional, dict):
                prune(obj[key], additional, root=False)
            elif additional is True or _preserves(schema):
                continue
            else:
                del obj[key]
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in obj:
                prune(item, items, root=False)


def unknown_fields(obj: Any, schema: Schema, path: str = "", root: bool = True) -> list[str]:
    """The paths pruning would drop, in document order: what `fieldValidation=Strict` reports
    (`spec.template.spec.containers[0].containerConcurency`), the way the real server's
    strict decoder names them."""
    out: list[str] = []
    if isinstance(obj, dict):
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        if embedded:
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                out += [_join(_join(path, "metadata"), k) for k in meta if k not in OBJECT_META_FIELDS]
        props: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if embedded and key in _ROOT_KEEP:
                continue
            if key in props:
                out += unknown_fields(value, props[key], _join(path, key), root=False)
            elif isinstance(additional, dict):
                out += unknown_fields(value, additional, _join(path, key), root=False)
            elif not (additional is True or _preserves(schema)):
                out.append(_join(path, key))
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(obj):
                out += unknown_fields(item, items, f"{path}[{i}]", root=False)
    return out


# ---------------------------------------------------------------- defaulting


def apply_defaults(obj: Any, schema: Schema) -> None:
    if isinstance(obj, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, value in obj.items():
                if key not in props:
                    apply_defaults(value, additional)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in obj:
                apply_defaults(item, items)


# ---------------------------------------------------------------- validation


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _type_ok(value: Any, typ: str, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if typ == "object":
        return isinstance(value, dict)
    if typ == "array":
        return isinstance(value, list)
    if typ == "string":
        return isinstance(value, str)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "integer":
        if isinstance(value, bool):
            return False
        # A JSON number with an integral value ("1.0") decodes as an integer in the real server.
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def validate(value: Any, schema: Schema, path: str = "", root: bool = True) -> list[Cause]:
    errs: list[Cause] = []
    _validate(value, schema, path, errs, root)
    return errs


def _validate(value: Any, schema: Schema, path: str, errs: list[Cause], root: bool = False) -> None:
    if value is None:
        if schema.get("nullable") or not schema.get("type"):
            return
        typ = schema["type"]
        errs.append(
            Cause(
                "FieldValueTypeInvalid",
                f'Invalid value: "null": {path} in body must be of type {typ}: "null"',
                path,
            )
        )
        return
    typ = schema.get("type")
    if typ and not _type_ok(value, typ, schema):
        actual = _type_name(value)
        errs.append(
            Cause(
                "FieldValueTypeInvalid",
                f'Invalid value: "{actual}": {path} in body must be of type {typ}: "{actual}"',
                path,
            )
        )
        return
    _value_checks(value, schema, path, errs)
    for combinator in ("allOf", "anyOf", "oneOf", "not"):
        if combinator in schema:
            _combinators(value, schema, combinator, path, errs)
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        for req in schema.get("required") or ():
            if req not in value:
                errs.append(Cause("FieldValueRequired", "Required value", _join(path, req)))
        additional = schema.get("additionalProperties")
        for key, sub_value in value.items():
            if (root or schema.get("x-kubernetes-embedded-resource")) and key in _ROOT_KEEP:
                continue
            if key in props:
                _validate(sub_value, props[key], _join(path, key), errs)
            elif isinstance(additional, dict):
                _validate(sub_value, additional, _join(path, key), errs)
        for bound, cmp, word in (
            ("maxProperties", int.__gt__, "at most"),
            ("minProperties", int.__lt__, "at least"),
        ):
            if bound in schema and cmp(len(value), int(schema[bound])):
                errs.append(
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {len(value)}: {path} in body should have {word} {schema[bound]} properties",
                        path,
                    )
                )
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", errs)
        _list_checks(value, schema, path, errs)


def _value_checks(value: Any, schema: Schema, path: str, errs: list[Cause]) -> None:
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errs.append(
            Cause(
                "FieldValueNotSupported",
                f"Unsupported value: {_show(value)}: supported values: {supported}",
                path,
            )
        )
    if isinstance(value, str):
        if "pattern" in schema and not _regex(schema["pattern"]).search(value):
            errs.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should match '{schema['pattern']}'",
                    path,
                )
            )
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            errs.append(Cause("FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes", path))
        if "minLength" in schema and len(value) < int(schema["minLength"]):
            errs.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be at least "
                    f"{schema['minLength']} chars long",
                    path,
                )
            )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if value < lo or (schema.get("exclusiveMinimum") is True and value == lo):
                word = "greater than" if schema.get("exclusiveMinimum") is True else "greater than or equal to"
                errs.append(
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {value}: {path} in body should be {word} {lo}",
                        path,
                    )
                )
        if "maximum" in schema:
            hi = schema["maximum"]
            if value > hi or (schema.get("exclusiveMaximum") is True and value == hi):
                word = "less than" if schema.get("exclusiveMaximum") is True else "less than or equal to"
                errs.append(
                    Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {value}: {path} in body should be {word} {hi}",
                        path,
                    )
                )
        if "multipleOf" in schema and schema["multipleOf"] and value % schema["multipleOf"] != 0:
            errs.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {value}: {path} in body should be a multiple of {schema['multipleOf']}",
                    path,
                )
            )


def _list_checks(value: list[Any], schema: Schema, path: str, errs: list[Cause]) -> None:
    if "maxItems" in schema and len(value) > int(schema["maxItems"]):
        errs.append(
            Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                path,
            )
        )
    if "minItems" in schema and len(value) < int(schema["minItems"]):
        errs.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items",
                path,
            )
        )
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                errs.append(Cause("FieldValueDuplicate", f"Duplicate value: {key}", f"{path}[{i}]"))
            seen.add(key)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            ident = {k: item.get(k) for k in keys}
            key = json.dumps(ident, sort_keys=True)
            if key in seen_keys:
                errs.append(Cause("FieldValueDuplicate", f"Duplicate value: {key}", f"{path}[{i}]"))
            seen_keys.add(key)


def _combinators(value: Any, schema: Schema, which: str, path: str, errs: list[Cause]) -> None:
    if which == "allOf":
        for sub in schema["allOf"]:
            _validate(value, sub, path, errs)
        return
    if which == "not":
        if not validate(value, schema["not"], path, root=False):
            errs.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body must not validate the schema (not)",
                    path,
                )
            )
        return
    results = [validate(value, sub, path, root=False) for sub in schema[which]]
    passing = sum(1 for r in results if not r)
    if which == "anyOf" and passing == 0:
        for r in results:
            errs.extend(r)
    elif which == "oneOf" and passing != 1:
        if passing == 0:
            for r in results:
                errs.extend(r)
        else:
            errs.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body must validate one and only one schema (oneOf)",
                    path,
                )
            )


def check_structural(schema: Schema, path: str = "") -> list[str]:
    """A light form of the structural-schema rules: every node with properties/items has a type."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{path or '<root>'}: schema must be an object"]
    typed = schema.get("type") or schema.get("x-kubernetes-int-or-string") or _preserves(schema)
    untyped = not typed
    if untyped and (schema.get("properties") or schema.get("items")):
        problems.append(f"{path or '<root>'}.type: Required value: must not be empty for specified fields")
    for key, sub in (schema.get("properties") or {}).items():
        problems += check_structural(sub, _join(path, "properties") + "[" + key + "]")
    items = schema.get("items")
    if isinstance(items, dict):
        problems += check_structural(items, _join(path, "items"))
    return problems
