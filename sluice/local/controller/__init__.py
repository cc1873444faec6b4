"""`sluice local`'s mini-controller: Knative's serving controller (Service → Configuration →
Revision → Deployment/PodAutoscaler, Route, SKS → Services/Endpoints) plus the Kubernetes
controllers it relies on (deployment → pods, endpoints), one level-triggered loop over the caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .caches import Caches
from .events import EventRecorder
from .network import NetworkReconciler
from .serving import ServingReconciler
from .workloads import WorkloadReconciler
from .writer import Writer

__all__ = ["Caches", "Controller"]

log = logging.getLogger("sluice.local.controller")


class Controller:
    """Runs a reconcile pass after each cache change (debounced) and every `resync` seconds."""

    def __init__(
        self,
        caches: Caches,
        activator_ip: str,
        domain: str,
        features: dict[str, str] | None = None,
        debounce: float = 0.005,
        resync: float = 1.0,
        initial_scale: int = 1,
    ) -> None:
        self.caches = caches
        self.writer = Writer(caches.kube)
        self.events = EventRecorder(caches.kube, "controller")
        self.serving = ServingReconciler(caches, self.writer, domain, features, self.events, initial_scale)
        self.network = NetworkReconciler(caches, self.writer, activator_ip)
        self.workloads = WorkloadReconciler(caches, self.writer)
        self.debounce = debounce
        self.resync = resync
        self.passes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        caches.subscribe(self._wake.set)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="controller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconcile_once(self) -> None:
        self.passes += 1
        # Pods and endpoints first: scale changes and readiness are on the cold-start path.
        await self.workloads.reconcile()
        await self.network.reconcile()
        await self.serving.reconcile()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.resync)
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
                await asyncio.sleep(0.2)
