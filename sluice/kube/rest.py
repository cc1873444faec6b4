"""The Kubernetes API methods the activator and the autoscaler call, over kubernetes-asyncio's
`ApiClient.call_api`: named, called and answered as the generated methods of `CoreV1Api`,
`CustomObjectsApi` and `AppsV1Api` are with `_preload_content=False` (the raw response), which
is how every Sluice call is made (`rawjson.py`, `informer.py`).

Why not the generated classes: their modules are loaded whole for the few methods used, and
`core_v1_api` alone is 2.8 MB of source, ~3 MB of RSS in every replica (with `apps_v1_api` and
`custom_objects_api` ~5 MB; issue 19, bench/component_cost.py). The request each method makes is
the generated one's: same path template and path-parameter quoting (`call_api`), the same query
names, `Accept: application/json`, the `BearerToken` auth setting (so the in-cluster token
refresh hook runs), the same timeouts. PATCH bodies are JSON patches (a list), as Sluice sends.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppsV1", "CoreV1", "CustomObjects"]

# The generated methods' keyword arguments (snake case) and the query parameters they become, in
# the generated methods' order.
_QUERY = {
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "label_selector": "labelSelector",
    "limit": "limit",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}
_JSON = "application/json"
_JSON_PATCH = "application/json-patch+json"


class _Api:
    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    async def _call(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        body: Any = None,
        *,
        _preload_content: bool = True,
        _request_timeout: Any = None,
        **params: Any,
    ) -> Any:
        if _preload_content:
            # The generated methods would decode into models; nothing in Sluice asks for that.
            raise ValueError("sluice.kube.rest answers raw responses only: pass _preload_content=False")
        unknown = params.keys() - _QUERY.keys()
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        query = [(name, params[key]) for key, name in _QUERY.items() if params.get(key) is not None]
        headers = {"Accept": _JSON}
        if body is not None:
            headers["Content-Type"] = _JSON_PATCH if method == "PATCH" else _JSON
        return await self.api_client.call_api(
            path,
            method,
            path_params,
            query,
            headers,
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=_request_timeout,
        )


class CoreV1(_Api):
    """`CoreV1Api`'s methods the components call."""

    async def list_pod_for_all_namespaces(self, **kw: Any) -> Any:
        return await self._call("GET", "/api/v1/pods", {}, **kw)

    async def list_service_for_all_namespaces(self, **kw: Any) -> Any:
        return await self._call("GET", "/api/v1/services", {}, **kw)

    async def list_endpoints_for_all_namespaces(self, **kw: Any) -> Any:
        return await self._call("GET", "/api/v1/endpoints", {}, **kw)

    async def list_namespaced_config_map(self, namespace: str, **kw: Any) -> Any:
        return await self._call("GET", "/api/v1/namespaces/{namespace}/configmaps", {"namespace": namespace}, **kw)

    async def list_namespaced_secret(self, namespace: str, **kw: Any) -> Any:
        return await self._call("GET", "/api/v1/namespaces/{namespace}/secrets", {"namespace": namespace}, **kw)

    async def read_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/configmaps/{name}"
        return await self._call("GET", path, {"namespace": namespace, "name": name}, **kw)

    async def read_namespaced_endpoints(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/endpoints/{name}"
        return await self._call("GET", path, {"namespace": namespace, "name": name}, **kw)

    async def read_namespaced_service(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/services/{name}"
        return await self._call("GET", path, {"namespace": namespace, "name": name}, **kw)

    async def create_namespaced_service(self, namespace: str, body: Any, **kw: Any) -> Any:
        return await self._call("POST", "/api/v1/namespaces/{namespace}/services", {"namespace": namespace}, body, **kw)


class AppsV1(_Api):
    """`AppsV1Api`'s methods the autoscaler calls (the scale target, §4.2)."""

    async def read_namespaced_deployment(self, name: str, namespace: str, **kw: Any) -> Any:
        path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        return await self._call("GET", path, {"namespace": namespace, "name": name}, **kw)

    async def patch_namespaced_deployment_scale(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        return await self._call("PATCH", path, {"namespace": namespace, "name": name}, body, **kw)


_CUSTOM = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"


class CustomObjects(_Api):
    """`CustomObjectsApi`'s methods the components call (Knative's resources)."""

    async def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> Any:
        params = {"group": group, "version": version, "plural": plural}
        return await self._call("GET", "/apis/{group}/{version}/{plural}", params, **kw)

    async def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return await self._call("GET", _CUSTOM + "/{name}", params, **kw)

    async def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Any:
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural}
        return await self._call("POST", _CUSTOM, params, body, **kw)

    async def replace_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return await self._call("PUT", _CUSTOM + "/{name}", params, body, **kw)

    async def replace_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return await self._call("PUT", _CUSTOM + "/{name}/status", params, body, **kw)

    async def patch_namespaced_custom_object_scale(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        params = {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}
        return await self._call("PATCH", _CUSTOM + "/{name}/scale", params, body, **kw)
