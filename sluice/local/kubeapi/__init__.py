"""Embedded Kubernetes API server: the REST subset Sluice's components use, served locally.

async with EmbeddedAPIServer(port=0) as server:
    server.write_kubeconfig(path)
    api = await kube_client_from_kubeconfig(path)   # kubernetes_asyncio ApiClient
"""

from .embedded import EmbeddedAPIServer, default_crd_dir
from .errors import APIError
from .kubeconfig import kube_client_from_kubeconfig, kubeconfig_dict, write_kubeconfig
from .resources import Registry, ResourceType

__all__ = [
    "APIError",
    "EmbeddedAPIServer",
    "Registry",
    "ResourceType",
    "default_crd_dir",
    "kube_client_from_kubeconfig",
    "kubeconfig_dict",
    "write_kubeconfig",
]
