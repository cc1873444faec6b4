"""Plain-dict REST access to the Kubernetes API through kubernetes-asyncio.

`sluice local`'s controller and kubelet use the same client library as the activator and the
autoscaler (ARCHITECTURE.md: one code path to Kubernetes), but read and write raw JSON: the
objects are custom resources or need a handful of fields, and generated models would only get in
the way. Every call works unchanged against a real kube-apiserver.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..kube.rawjson import read_body

__all__ = ["ALL", "GVR", "Kube", "KubeError"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# kubernetes-asyncio's list keyword arguments and the query parameters they stand for.
_LIST_PARAMS = {
    "label_selector": "labelSelector",
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}


@dataclass(frozen=True, slots=True)
class GVR:
    group: str
    version: str
    plural: str

    def path(self, namespace: str = "", name: str = "", sub: str = "") -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


class ALL:
    """The resources `sluice local` reads or writes (CONTRACT.md §0)."""

    SERVICES = GVR("serving.knative.dev", "v1", "services")
    CONFIGURATIONS = GVR("serving.knative.dev", "v1", "configurations")
    REVISIONS = GVR("serving.knative.dev", "v1", "revisions")
    ROUTES = GVR("serving.knative.dev", "v1", "routes")
    PODAUTOSCALERS = GVR("autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers")
    METRICS = GVR("autoscaling.internal.knative.dev", "v1alpha1", "metrics")
    SKS = GVR("networking.internal.knative.dev", "v1alpha1", "serverlessservices")
    DEPLOYMENTS = GVR("apps", "v1", "deployments")
    PODS = GVR("", "v1", "pods")
    K8S_SERVICES = GVR("", "v1", "services")
    ENDPOINTS = GVR("", "v1", "endpoints")
    CONFIGMAPS = GVR("", "v1", "configmaps")
    NAMESPACES = GVR("", "v1", "namespaces")


class KubeError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{what}: HTTP {status}: {message}")


class Kube:
    """Thin async verbs over an `ApiClient`; bodies and results are dicts."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        timeout: Any = 30,
    ) -> tuple[int, Any]:
        resp = await self.api_client.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        return resp.status, resp

    async def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        _, resp = await self.request(method, path, body, content_type, query)
        status, _, raw = await read_body(resp)
        try:
            parsed: Any = json.loads(raw) if raw else {}
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        if status not in ok:
            raise KubeError(status, parsed, f"{method} {path}")
        return parsed

    def list_call(self, gvr: GVR, namespace: str = "") -> Callable[..., Awaitable[Any]]:
        """`gvr`'s list endpoint as a kubernetes-asyncio list method (its keyword arguments in,
        the raw response out): what `sluice.kube.Informer` lists and watches through."""
        path = gvr.path(namespace)

        async def list_(*, _preload_content: bool = False, _request_timeout: Any = 30, **params: Any) -> Any:
            query = {_LIST_PARAMS[k]: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
            _, resp = await self.request("GET", path, query=query, timeout=_request_timeout)
            return resp

        return list_

    async def get(self, gvr: GVR, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            out: dict[str, Any] = await self._json("GET", gvr.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return out

    async def list(self, gvr: GVR, namespace: str = "", label_selector: str = "") -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        data = await self._json("GET", gvr.path(namespace), query=query)
        return [i for i in data.get("items") or () if isinstance(i, dict)]

    async def create(self, gvr: GVR, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._json("POST", gvr.path(namespace), body)
        return out

    async def merge_patch(
        self, gvr: GVR, namespace: str, name: str, body: dict[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        out: dict[str, Any] = await self._json("PATCH", gvr.path(namespace, name, sub), body, MERGE_PATCH)
        return out

    async def replace_status(self, gvr: GVR, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._json("PUT", gvr.path(namespace, name, "status"), body)
        return out

    async def replace(self, gvr: GVR, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._json("PUT", gvr.path(namespace, name), body)
        return out

    async def delete(self, gvr: GVR, namespace: str, name: str, grace_period_seconds: int | None = None) -> bool:
        """False if it was already gone."""
        query = {"gracePeriodSeconds": str(grace_period_seconds)} if grace_period_seconds is not None else None
        try:
            await self._json("DELETE", gvr.path(namespace, name), query=query, ok=(200, 202))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True
