"""Thin helpers over kubernetes-asyncio shared by the activator, the autoscaler and `sluice local`.

- `informer`  `Informer`: list + watch of one resource into a cache of dicts, with handlers
- `rawjson`   `call()` / `call_obj()` / `read_configmap()`: API calls on raw JSON
- `client`    `new_api_client()` / `api_client_from_env()`: in-cluster or kubeconfig credentials

Importing this package loads neither kubernetes_asyncio nor aiohttp (each is imported where it
is first needed), but it is still never imported on the queue-proxy's path (ARCHITECTURE.md).
"""

from __future__ import annotations

from .client import api_client_from_env, kubeconfig_from_env, new_api_client
from .informer import Handler, Informer, Key, ListCall, object_key
from .rawjson import JSONObj, api_error, api_status, call, call_obj, is_conflict, is_not_found, read_configmap

__all__ = [
    "Handler",
    "Informer",
    "JSONObj",
    "Key",
    "ListCall",
    "api_client_from_env",
    "api_error",
    "api_status",
    "call",
    "call_obj",
    "is_conflict",
    "is_not_found",
    "kubeconfig_from_env",
    "new_api_client",
    "object_key",
    "read_configmap",
]
