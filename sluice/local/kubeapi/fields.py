"""Field validation (`?fieldValidation=Strict|Warn|Ignore`) and admission hooks for writes.

kubectl sends `fieldValidation=Strict` on create, update and patch by default; the real server
then refuses an object with a field its schema does not know, naming it the way the strict
decoder does: `Service in version "v1" cannot be handled as a Service: strict decoding error:
unknown field "spec.template.spec.containers[0].containerConcurency"` (400 BadRequest; a patch is
422 Invalid on the field `patch`). `Warn` (the server's default) accepts and answers with one
`Warning: 299` header per field; `Ignore` prunes silently, as before field validation existed.

Custom resources are checked against their structural schema. Built-in kinds are served without
a schema here, so only their `metadata` and top-level fields are checked (a typo inside a Pod's
`spec` is not caught).

Admission hooks stand in for validating webhooks (Knative's `validation.webhook.serving.knative.dev`):
a function per group/resource returning the webhook's refusal message, or "" to admit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import APIError, Cause
from .meta import OBJECT_META_FIELDS, JSONObj
from .resources import ResourceType
from .schema import unknown_fields

MODES = ("Strict", "Warn", "Ignore")
DEFAULT_MODE = "Warn"  # the server's default since 1.27 when a client sends none


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    rt: ResourceType
    obj: JSONObj  # after defaulting and schema validation
    old: JSONObj | None  # the stored object on update, None on create
    # Reads another object (a webhook reads its ConfigMaps): (group, plural, namespace, name).
    lookup: Callable[[str, str, str, str], JSONObj | None]


# Returns the webhook's refusal ("" admits); `webhook_denied` shapes it.
AdmissionHook = Callable[[AdmissionRequest], str]


@dataclass(slots=True)
class WriteContext:
    """Per-request options of a write and what it reports back (warnings)."""

    field_validation: str = DEFAULT_MODE
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | None) -> WriteContext:
        mode = raw or DEFAULT_MODE
        if mode not in MODES:
            raise errors.bad_request(
                f'fieldValidation parameter unsupported: "{mode}". Supported values: "Strict", "Warn", "Ignore"'
            )
        return cls(mode)


def unknown_paths(rt: ResourceType, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return []
    if rt.schema is not None:
        return unknown_fields(obj, rt.schema)
    meta = obj.get("metadata")
    out = [f"metadata.{k}" for k in meta if k not in OBJECT_META_FIELDS] if isinstance(meta, dict) else []
    if rt.top_fields:
        known = {"apiVersion", "kind", "metadata", *rt.top_fields}
        out += [k for k in obj if k not in known]
    return out


def go_value(v: Any) -> str:
    """Go's `%v` of a decoded JSON value (`map[spec:map[replicas:2]]`), as field errors print it."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_value(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _strict_message(paths: list[str]) -> str:
    return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in paths)


def check_fields(rt: ResourceType, obj: Any, ctx: WriteContext | None, patch: Any = None) -> None:
    """Apply the request's field validation to a decoded body (or a patched object)."""
    if ctx is None or ctx.field_validation == "Ignore":
        return
    paths = unknown_paths(rt, obj)
    if not paths:
        return
    if ctx.field_validation == "Warn":
        ctx.warnings.extend(f'unknown field "{p}"' for p in paths)
        return
    if patch is not None:
        raise errors.invalid(
            rt.kind,
            rt.group,
            str(((obj.get("metadata") or {}) if isinstance(obj, dict) else {}).get("name") or ""),
            [
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(go_value(patch))}: {_strict_message(paths)}",
                    "patch",
                )
            ],
        )
    raise errors.bad_request(
        f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {_strict_message(paths)}'
    )


def webhook_denied(webhook: str, message: str) -> APIError:
    """The refusal of a validating admission webhook, as the API server relays it."""
    return APIError(400, "BadRequest", f'admission webhook "{webhook}" denied the request: {message}')
