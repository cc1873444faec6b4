"""`sluice local`'s mini-controller: Knative's serving controller (Service → Configuration →
Revision → Deployment/PodAutoscaler, Route, SKS → Services/Endpoints) plus the Kubernetes
controllers it relies on (deployment → pods, endpoints), level-triggered loops over the caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .caches import Caches
from .events import EventRecorder
from .network import NetworkReconciler
from .serving import ServingReconciler
from .workloads import WorkloadReconciler
from .writer import Writer

__all__ = ["Caches", "Controller"]

log = logging.getLogger("sluice.local.controller")


class Controller:
    """Runs reconcile passes after each cache change (debounced) and every `resync` seconds."""

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
        # Two loops over the same caches: pods and endpoints (the cold start's path) and the
        # Knative objects. One pass over everything took 20-120 ms with a few services busy, and a
        # new pod's Endpoints waited for the rest of a pass already running (issue 19). They
        # write disjoint objects (serving: Knative kinds and Deployment specs; workloads:
        # Pods and Deployment status; network: Services, Endpoints, SKS status).
        self._wakes = (asyncio.Event(), asyncio.Event())
        self._tasks: list[asyncio.Task[None]] = []
        for wake in self._wakes:
            caches.subscribe(wake.set)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        fast, slow = self._wakes
        self._tasks = [
            loop.create_task(self._run(fast, self._reconcile_pods), name="controller-pods"),
            loop.create_task(self._run(slow, self._reconcile_serving), name="controller"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reconcile_pods(self) -> None:
        await self.workloads.reconcile()
        await self.network.reconcile()

    async def _reconcile_serving(self) -> None:
        self.passes += 1
        await self.serving.reconcile()

    async def reconcile_once(self) -> None:
        # Pods and endpoints first: scale changes and readiness are on the cold-start path.
        await self._reconcile_pods()
        await self._reconcile_serving()

    async def _run(self, wake: asyncio.Event, reconcile: Callable[[], Awaitable[None]]) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.resync)
            await asyncio.sleep(self.debounce)
            wake.clear()
            try:
                await reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
                await asyncio.sleep(0.2)
