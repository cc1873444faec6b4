"""The activator's Kubernetes access (CONTRACT.md §3.1), over the shared `sluice.kube` helpers.

The activator's only path to Kubernetes (ARCHITECTURE.md): list+watch informers on raw JSON
that hand each event to one handler, a ConfigMap read at start, and the API client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.kube import Informer as SharedInformer
from sluice.kube import ListCall, new_api_client, object_key, read_configmap
from sluice.kube.rest import CoreV1, CustomObjects

__all__ = ["CoreV1", "CustomObjects", "Handler", "Informer", "make_api_client", "object_key", "read_configmap"]

Handler = Callable[[str, dict[str, Any]], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)


class Informer(SharedInformer):
    """The shared informer with one handler given up front, called with (type, object): the
    activator's handlers only tell DELETED from the rest and never need the previous version."""

    def __init__(
        self,
        name: str,
        list_call: ListCall,
        handler: Handler,
        label_selector: str = "",
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        super().__init__(name, list_call, label_selector=label_selector, watch_timeout=watch_timeout, backoff=backoff)

        def deliver(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            obj = new if new is not None else old
            if obj is not None:
                handler(kind, obj)

        self.add_handler(deliver)


async def make_api_client(kubeconfig: str) -> Any:
    """From `kubeconfig` when given (`ActivatorConfig.kubeconfig`: SLUICE_KUBECONFIG, else
    KUBECONFIG; tests, `sluice local`, running outside a cluster), else the pod's in-cluster
    service account."""
    return await new_api_client(kubeconfig or None)
