"""The shared informer caches of one `sluice local` instance (controller, kubelet, ingress)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..kube import ALL, Kube
from .informer import Informer

__all__ = ["Caches"]


class Caches:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._listeners: list[Callable[[], None]] = []
        notify = self._notify
        self.ksvcs = Informer(kube, ALL.SERVICES, notify)
        self.configurations = Informer(kube, ALL.CONFIGURATIONS, notify)
        self.revisions = Informer(kube, ALL.REVISIONS, notify)
        self.routes = Informer(kube, ALL.ROUTES, notify)
        self.pas = Informer(kube, ALL.PODAUTOSCALERS, notify)
        self.sks = Informer(kube, ALL.SKS, notify)
        self.deployments = Informer(kube, ALL.DEPLOYMENTS, notify)
        self.pods = Informer(kube, ALL.PODS, notify)
        self.services = Informer(kube, ALL.K8S_SERVICES, notify)
        self.endpoints = Informer(kube, ALL.ENDPOINTS, notify)
        self.all = [
            self.ksvcs,
            self.configurations,
            self.revisions,
            self.routes,
            self.pas,
            self.sks,
            self.deployments,
            self.pods,
            self.services,
            self.endpoints,
        ]

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    async def start(self, timeout: float = 30.0) -> None:
        for informer in self.all:
            informer.start()
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.all)), timeout)

    async def stop(self) -> None:
        for informer in self.all:
            await informer.stop()

    def in_namespace(self, informer: Informer, namespace: str) -> list[dict[str, Any]]:
        return [o for (ns, _), o in informer.objects.items() if ns == namespace]
