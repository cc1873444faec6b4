"""The autoscaler's Kubernetes access: informers, raw-JSON calls, the work queue, `KnativeAPI`.

The autoscaler handles every Kubernetes object as the JSON dict the API serves (camelCase), the
shape `resources.py` already works on. One code path: the same calls run against the embedded API
of `sluice local` and a real kube-apiserver (ARCHITECTURE.md). The list+watch and raw-JSON
mechanics are the shared `sluice.kube` ones; what is the autoscaler's own lives here:

- `call()` / `call_obj()`  one API call, JSON in and out, `ApiException` on a non-2xx answer
- `Informer`      list + watch of one resource into a cache (Go's shared informer, minus sharing)
- `WorkQueue`     Go's workqueue: dedup, one worker per key, per-key exponential backoff
- `load_api_client()` SLUICE_KUBECONFIG, else in-cluster when KUBERNETES_SERVICE_HOST is set, else
  KUBECONFIG or ~/.kube/config
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sluice.kube import ApiException, ListCall, api_class, api_client_from_env
from sluice.kube import Informer as SharedInformer
from sluice.kube.rawjson import JSONObj, api_error, api_status, call, call_obj, is_conflict, is_not_found
from sluice.kube.rest import AppsV1, CoreV1, CustomObjects

__all__ = [
    "Informer",
    "KnativeAPI",
    "WorkQueue",
    "api_error",
    "api_status",
    "call",
    "call_obj",
    "is_conflict",
    "is_not_found",
    "key_of",
    "load_api_client",
    "run_workers",
    "split_key",
]

logger = logging.getLogger("autoscaler.kube")


def key_of(obj: Mapping[str, Any]) -> str:
    """The work-queue key of an object: "namespace/name" (Go's cache.MetaNamespaceKeyFunc)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


class Informer(SharedInformer):
    """The shared informer with client-go's reflector back-off (0.5 s doubling to 30 s): the
    autoscaler runs beside a real apiserver it must not hammer while that is unhealthy.

    Handlers get (type, old, new); `objects` is keyed by (namespace, name), `key_of()` gives the
    work-queue key."""

    def __init__(
        self,
        name: str,
        list_fn: ListCall,
        *,
        label_selector: str | None = None,
        watch_timeout: int = 300,
    ) -> None:
        super().__init__(
            name, list_fn, label_selector=label_selector or "", watch_timeout=watch_timeout, backoff=(0.5, 30.0)
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"API error {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"


class WorkQueue:
    """Go's rate-limited workqueue for reconcilers.

    A key waits in the queue at most once; it is never handed to two workers at once (an add while
    it is being processed queues it again for afterwards); `add_rate_limited` re-adds it after a
    per-key exponential delay (`base` doubling up to `cap`) that `forget` resets on success.
    """

    def __init__(self, base: float = 0.1, cap: float = 60.0) -> None:
        self.base = base
        self.cap = cap
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        # key -> (when, timer). `when` is kept here, not read back from the handle: uvloop hands
        # out plain Handles without `when()` for times already past (issue 13).
        self._timers: dict[str, tuple[float, asyncio.Handle]] = {}
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: str, delay: float) -> None:
        """Adds `key` after `delay` seconds; an earlier pending timer for the key wins."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None and not pending[1].cancelled():
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self.cap, self.base * (2.0**n))
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str:
        while not self._queue:
            if self._closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        self._closed = True
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._wakeup.set()


async def run_workers(
    name: str, queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], workers: int = 2
) -> None:
    """Processes keys until cancelled. A failing key is retried with backoff; its error is logged
    on the first failure and then every 10th (no error storm for a stuck object)."""

    async def worker() -> None:
        while True:
            key = await queue.get()
            try:
                await reconcile(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception as exc:
                n = queue.failures(key)
                delay = queue.add_rate_limited(key)
                # A conflict is optimistic concurrency against a cache a moment behind: expected,
                # retried at once-ish; only a streak of them is worth a warning.
                level = logging.DEBUG if is_conflict(exc) and n < 10 else logging.WARNING
                if n % 10 == 0 or level == logging.DEBUG:
                    logger.log(
                        level,
                        "%s: reconcile failed (attempt %d), retrying in %.1fs: %s",
                        name,
                        n + 1,
                        delay,
                        _describe(exc),
                        extra={"fields": {"knative.dev/key": key}},
                        exc_info=api_status(exc) == 0 and not isinstance(exc, OSError | TimeoutError),
                    )
            else:
                queue.forget(key)
            queue.done(key)

    tasks = [asyncio.create_task(worker(), name=f"{name} worker {i}") for i in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def load_api_client(environ: Mapping[str, str]) -> Any:
    """A kubernetes_asyncio ApiClient: in-cluster when KUBERNETES_SERVICE_HOST is set (and
    SLUICE_KUBECONFIG is not), else the kubeconfig named by SLUICE_KUBECONFIG or KUBECONFIG."""
    return await api_client_from_env(environ)


PA_GROUP, PA_VERSION, PA_PLURAL = "autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers"
METRIC_PLURAL = "metrics"
SKS_GROUP, SKS_VERSION, SKS_PLURAL = "networking.internal.knative.dev", "v1alpha1", "serverlessservices"


class KnativeAPI:
    """The API calls the autoscaler makes, on raw JSON, over one kubernetes-asyncio ApiClient."""

    def __init__(self, api_client: Any) -> None:
        # The methods called, not the generated modules (sluice.kube.rest: ~5 MB less), and the two
        # small generated classes alone, not kubernetes_asyncio.client's 1,500 models.
        self.api_client = api_client
        self.custom = CustomObjects(api_client)
        self.apps = AppsV1(api_client)
        self.core = CoreV1(api_client)
        self.coordination: Any = api_class("coordination_v1_api", "CoordinationV1Api")(api_client)
        self.discovery: Any = api_class("discovery_v1_api", "DiscoveryV1Api")(api_client)

    # ---- list functions for informers ----

    def list_pas(self) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.custom.list_cluster_custom_object, PA_GROUP, PA_VERSION, PA_PLURAL)

    def list_skss(self) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.custom.list_cluster_custom_object, SKS_GROUP, SKS_VERSION, SKS_PLURAL)

    def list_metrics(self) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.custom.list_cluster_custom_object, PA_GROUP, PA_VERSION, METRIC_PLURAL)

    def list_pods(self) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.core.list_pod_for_all_namespaces)

    def list_configmaps(self, namespace: str) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.core.list_namespaced_config_map, namespace)

    # ---- PodAutoscaler / SKS / Metric ----

    async def _get(self, group: str, version: str, plural: str, namespace: str, name: str) -> JSONObj:
        return await call_obj(self.custom.get_namespaced_custom_object, group, version, namespace, plural, name)

    async def _create(self, group: str, version: str, plural: str, obj: JSONObj) -> JSONObj:
        ns = obj["metadata"]["namespace"]
        return await call_obj(self.custom.create_namespaced_custom_object, group, version, ns, plural, obj)

    async def _replace(self, group: str, version: str, plural: str, obj: JSONObj, status: bool = False) -> JSONObj:
        meta = obj["metadata"]
        custom = self.custom
        fn = custom.replace_namespaced_custom_object_status if status else custom.replace_namespaced_custom_object
        return await call_obj(fn, group, version, meta["namespace"], plural, meta["name"], obj)

    async def get_pa(self, namespace: str, name: str) -> JSONObj:
        return await self._get(PA_GROUP, PA_VERSION, PA_PLURAL, namespace, name)

    async def update_pa_status(self, pa: JSONObj) -> JSONObj:
        return await self._replace(PA_GROUP, PA_VERSION, PA_PLURAL, pa, status=True)

    async def get_sks(self, namespace: str, name: str) -> JSONObj:
        return await self._get(SKS_GROUP, SKS_VERSION, SKS_PLURAL, namespace, name)

    async def create_sks(self, sks: JSONObj) -> JSONObj:
        return await self._create(SKS_GROUP, SKS_VERSION, SKS_PLURAL, sks)

    async def replace_sks(self, sks: JSONObj) -> JSONObj:
        return await self._replace(SKS_GROUP, SKS_VERSION, SKS_PLURAL, sks)

    async def get_metric(self, namespace: str, name: str) -> JSONObj:
        return await self._get(PA_GROUP, PA_VERSION, METRIC_PLURAL, namespace, name)

    async def create_metric(self, metric: JSONObj) -> JSONObj:
        return await self._create(PA_GROUP, PA_VERSION, METRIC_PLURAL, metric)

    async def replace_metric(self, metric: JSONObj) -> JSONObj:
        return await self._replace(PA_GROUP, PA_VERSION, METRIC_PLURAL, metric)

    async def update_metric_status(self, metric: JSONObj) -> JSONObj:
        return await self._replace(PA_GROUP, PA_VERSION, METRIC_PLURAL, metric, status=True)

    # ---- scale target ----

    @staticmethod
    def _target(ref: Mapping[str, Any]) -> tuple[str, str, str, str]:
        api_version = str(ref.get("apiVersion") or "apps/v1")
        group, _, version = api_version.rpartition("/")
        kind = str(ref.get("kind") or "Deployment")
        return group, version, kind, str(ref.get("name") or "")

    async def get_replicas(self, namespace: str, ref: Mapping[str, Any]) -> int:
        """spec.replicas of the scale target; an unset value counts as 1 (§4.2)."""
        group, version, kind, name = self._target(ref)
        if (group, kind) == ("apps", "Deployment"):
            obj = await call_obj(self.apps.read_namespaced_deployment, name, namespace)
        else:
            # Any other PodScalable: the plural is the lower-case kind + "s" (Knative's duck helper).
            obj = await call_obj(
                self.custom.get_namespaced_custom_object, group, version, namespace, kind.lower() + "s", name
            )
        replicas = (obj.get("spec") or {}).get("replicas")
        return int(replicas) if isinstance(replicas, int) else 1

    async def patch_replicas(self, namespace: str, ref: Mapping[str, Any], replicas: int) -> None:
        """The KPA's write: a JSON patch on the `scale` subresource (§4.2)."""
        group, version, kind, name = self._target(ref)
        patch = [{"op": "add", "path": "/spec/replicas", "value": replicas}]
        if (group, kind) == ("apps", "Deployment"):
            await call(self.apps.patch_namespaced_deployment_scale, name, namespace, patch)
        else:
            await call(
                self.custom.patch_namespaced_custom_object_scale,
                group,
                version,
                namespace,
                kind.lower() + "s",
                name,
                patch,
            )

    # ---- endpoints (activator probe without cluster DNS) ----

    async def first_ready_address(self, namespace: str, service: str, port_name: str) -> tuple[str, int] | None:
        try:
            ep = await call_obj(self.core.read_namespaced_endpoints, service, namespace)
        except ApiException as exc:
            if is_not_found(exc):
                return None
            raise
        candidates: list[tuple[str, int]] = []
        for subset in ep.get("subsets") or []:
            port = next(
                (int(p["port"]) for p in subset.get("ports") or [] if p.get("name", "") in (port_name, "")),
                None,
            )
            if port is None:
                continue
            candidates.extend((str(a["ip"]), port) for a in subset.get("addresses") or [] if a.get("ip"))
        return sorted(candidates)[0] if candidates else None
