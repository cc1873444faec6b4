"""Raw-JSON calls over kubernetes-asyncio: dicts in and out, no generated models.

Every Sluice component handles Kubernetes objects as the JSON the API serves (camelCase):
handlers need a handful of fields, most objects are Knative custom resources anyway, and a
field the generated models do not know survives a round trip. So calls pass
`_preload_content=False` and decode the body themselves.

kubernetes_asyncio is imported lazily: importing this module costs nothing on a path that never
talks to Kubernetes (ARCHITECTURE.md: never on the proxy path).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "JSONObj",
    "api_error",
    "api_status",
    "call",
    "call_obj",
    "is_conflict",
    "is_not_found",
    "read_body",
    "read_configmap",
]

JSONObj = dict[str, Any]


async def read_body(resp: Any) -> tuple[int, str, bytes]:
    """(status, reason, body) of a `_preload_content=False` response, which it releases."""
    try:
        body: bytes = await resp.read()
        return int(resp.status), str(getattr(resp, "reason", "") or ""), body
    finally:
        resp.release()


def api_error(status: int, reason: str, body: str) -> ApiException:
    """An `ApiException` shaped like the preloaded path's (`body` as text)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    exc = ApiException(status=status, reason=reason)
    setattr(exc, "body", body)  # noqa: B010 - the stub types it bytes; kubernetes-asyncio stores text
    return exc


def api_status(exc: BaseException) -> int:
    """The HTTP status of an API error, 0 for anything else (transport errors)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    return int(getattr(exc, "status", 0) or 0) if isinstance(exc, ApiException) else 0


def is_not_found(exc: BaseException) -> bool:
    return api_status(exc) == 404


def is_conflict(exc: BaseException) -> bool:
    return api_status(exc) == 409


async def call(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Calls a kubernetes-asyncio API method and returns the decoded JSON body (None if empty).

    Raises `ApiException` (with `.status` and `.body`) on a non-2xx answer, as the preloaded path
    does, so callers test `is_not_found` / `is_conflict` the same way.
    """
    kwargs["_preload_content"] = False
    status, reason, body = await read_body(await fn(*args, **kwargs))
    if not 200 <= status <= 299:
        raise api_error(status, reason, body.decode("utf-8", "replace"))
    return json.loads(body) if body else None


async def call_obj(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> JSONObj:
    """`call()` for calls that answer one object."""
    from kubernetes_asyncio.client.exceptions import ApiException

    body = await call(fn, *args, **kwargs)
    if not isinstance(body, dict):
        raise ApiException(status=0, reason=f"unexpected answer: {type(body).__name__}")
    return body


async def read_configmap(api_client: Any, namespace: str, name: str, timeout: float = 30.0) -> dict[str, str]:
    """A ConfigMap's data, {} if it does not exist (Knative then applies the defaults)."""
    from .rest import CoreV1

    core = CoreV1(api_client)
    try:
        cm = await call_obj(core.read_namespaced_config_map, name, namespace, _request_timeout=timeout)
    except Exception as exc:
        if is_not_found(exc):
            return {}
        raise
    return {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
