"""API errors shaped as Kubernetes `metav1.Status` objects.

Clients (kubernetes-asyncio, kubectl, client-go) branch on `reason` and `code`, so every error
the server returns goes through `APIError.status()` and carries both, exactly as the real
kube-apiserver does (k8s.io/apimachinery/pkg/api/errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cause:
    reason: str
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(slots=True)
class APIError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def _qualified(resource: str, group: str) -> str:
    # The real server names the resource as `plural.group` ("deployments.apps"), bare for core.
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = kind
    return d


def not_found(resource: str, group: str, name: str) -> APIError:
    return APIError(
        404, "NotFound", f'{_qualified(resource, group)} "{name}" not found', _details(name, group, resource)
    )


def already_exists(resource: str, group: str, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


def conflict(resource: str, group: str, name: str, why: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


def stale_conflict(resource: str, group: str, name: str) -> APIError:
    # The exact text client-go's retry.RetryOnConflict users grep for in logs.
    return conflict(
        resource,
        group,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> APIError:
    # field.ErrorList.ToAggregate(): one error is printed bare, several inside brackets.
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qkind = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = [c.to_dict() for c in causes]
    return APIError(422, "Invalid", f'{qkind} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str, accepted: list[str]) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def page_not_found() -> APIError:
    # What kube-apiserver answers for a path it has no handler for (e.g. an unknown resource).
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def too_large(limit: int) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def forbidden_namespace_terminating(resource: str, group: str, name: str, ns: str) -> APIError:
    return APIError(
        403,
        "Forbidden",
        f'{_qualified(resource, group)} "{name}" is forbidden: unable to create new content in namespace '
        f"{ns} because it is being terminated",
        _details(name, group, resource),
    )
