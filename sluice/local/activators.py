"""The activator replicas of `sluice local`, as a cluster's kubelet and endpoints controller see
them: each is probed, and the `activator-service` Endpoints list the ready ones. Knative's SKS
reconciler copies those into every Proxy-mode public Endpoints (controller/network.py), and the
activators slice the pods by them (CONTRACT.md §3.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .controller.names import SYSTEM_NAMESPACE
from .kube import ALL, Kube, KubeError
from .procs import http_get
from .system import ACTIVATOR_SERVICE, activator_subsets

__all__ = ["ActivatorEndpoints", "activator_probe"]

log = logging.getLogger("sluice.local")


async def activator_probe(ip: str, timeout: float) -> bool:
    """The kubelet's readiness probe of an activator (§1.3): 200 once it serves."""
    status, _ = await http_get(ip, 8012, "/", {"User-Agent": "kube-probe/1.30"}, timeout)
    return status == 200


class ActivatorEndpoints:
    """What the kubelet and the endpoints controller do for the activator Deployment in a
    cluster: probe each replica and keep the `activator-service` Endpoints to the ready ones
    (the SKS reconciler copies them into every Proxy-mode public Endpoints, and the activators
    slice the pods by them, §3.5). A replica that exits leaves at once; one that fails
    FAILURE_THRESHOLD probes in a row leaves too; one probe passing brings it back."""

    PERIOD = 0.25
    FAILURE_THRESHOLD = 3

    def __init__(self, ips: list[str]) -> None:
        self.ips = ips
        self.ready: set[str] = set()
        self.failures: dict[str, int] = dict.fromkeys(ips, 0)
        self.published: frozenset[str] | None = None
        self._wake = asyncio.Event()
        self._published = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """A replica exited: look now (its probe fails at once), not at the next period."""
        self._wake.set()

    def start(self, kube: Kube) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(kube))

    async def wait_published(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._published.wait(), timeout)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, kube: Kube) -> None:
        while True:
            woken = self._wake.is_set()
            self._wake.clear()
            results = await asyncio.gather(*(activator_probe(ip, 0.5) for ip in self.ips))
            for ip, ok in zip(self.ips, results, strict=True):
                self.failures[ip] = 0 if ok else self.failures[ip] + 1
                if ok:
                    self.ready.add(ip)
                elif woken or self.failures[ip] >= self.FAILURE_THRESHOLD:
                    self.ready.discard(ip)
            current = frozenset(self.ready)
            if current != self.published:
                try:
                    body = {"subsets": activator_subsets(sorted(current), sorted(set(self.ips) - current))}
                    await kube.merge_patch(ALL.ENDPOINTS, SYSTEM_NAMESPACE, ACTIVATOR_SERVICE, body)
                    self.published = current
                    self._published.set()
                except (KubeError, OSError) as exc:
                    log.warning("updating the activator endpoints failed: %s", exc)
                except Exception:
                    log.exception("updating the activator endpoints failed")  # and try again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.PERIOD)
