"""Thin helpers over kubernetes-asyncio shared by the activator, the autoscaler and `sluice local`.

- `informer`  `Informer`: list + watch of one resource into a cache of dicts, with handlers
- `rawjson`   `call()` / `call_obj()` / `read_configmap()`: API calls on raw JSON
- `client`    `new_api_client()` / `api_client_from_env()`: in-cluster or kubeconfig credentials
- `rest`      `CoreV1`, `CustomObjects`, `AppsV1`: the generated API methods the components call,
              without loading the generated modules

- `modules`   `install()`: kubernetes_asyncio's packages without their `__init__` (no generated
              models); every module here imports kubernetes_asyncio's submodules alone

Importing this package loads kubernetes_asyncio's `exceptions` module (for `ApiException`) and no
more of it, and not aiohttp (each is imported where it is first needed); it is still never
imported on the queue-proxy's path (ARCHITECTURE.md).
"""

from __future__ import annotations

# isort: off
# First: importing `.modules` defers kubernetes_asyncio's packages before anything imports them.
from .modules import api_class
from kubernetes_asyncio.client.exceptions import ApiException

# isort: on

from .client import api_client_from_env, kubeconfig_from_env, new_api_client
from .informer import Handler, Informer, Key, ListCall, object_key
from .rawjson import JSONObj, api_error, api_status, call, call_obj, is_conflict, is_not_found, read_configmap

__all__ = [
    "ApiException",
    "Handler",
    "Informer",
    "JSONObj",
    "Key",
    "ListCall",
    "api_class",
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
