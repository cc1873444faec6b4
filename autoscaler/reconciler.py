"""The two controllers of the autoscaler image (CONTRACT.md §4): the KPA PodAutoscaler reconciler
(§4.3, §4.4) and the Metric reconciler (§4.2 "Metric", §4.8).

Both read from informer caches, write through `KnativeAPI`, and follow Knative's generated
reconciler: conditions initialised first, `observedGeneration` bumped, transition times groomed,
status written only when it changed (retrying conflicts on a fresh copy). A reconcile error is
returned to the work queue, which retries with backoff; the status computed so far is still
written, and the decider keeps its last decision, so a flaky API does not make the scale thrash.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.config import Reader
from sluice.kube import ApiException

from .annotations import KPA, RevisionAnnotations
from .collector import MetricCollector
from .conditions import READY, ConditionManager, groom_transition_times
from .config import ConfigStore
from .kpa import (
    DEFAULT_PROGRESS_DEADLINE,
    MIN_ACTIVATORS,
    NO_PRIVATE_SERVICE_NAME,
    PROXY,
    SCALE_UNKNOWN,
    PAStatus,
    compute_num_activators,
    compute_sks_mode,
    compute_status,
    is_controlled_by,
    make_metric,
    make_sks,
    metric_spec_differs,
    plan_scale,
    sks_ready,
    sks_spec_differs,
)
from .kube import Informer, KnativeAPI, WorkQueue, is_conflict, is_not_found, split_key
from .podaccessor import REVISION_LABEL, PodCounts, PodIndex
from .prober import ActivatorProber
from .resources import MetricSpec, make_decider_spec, make_metric_spec
from .scaling import Decider, MultiScaler
from .scraper import ScrapeError

__all__ = [
    "DeploymentConfig",
    "KPAReconciler",
    "MetricReconciler",
    "NotOwnedError",
    "metric_spec_from_object",
    "revision_of",
]

logger = logging.getLogger("autoscaler.reconciler")

DEPLOYMENT_CONFIG_NAME = "config-deployment"
STATUS_UPDATE_ATTEMPTS = 5


def _fields(key: str) -> dict[str, Any]:
    return {"fields": {"knative.dev/key": key}}


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """The one `config-deployment` key the KPA reads (§4.4 activation timeout)."""

    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> DeploymentConfig:
        r = Reader(data, source=f"ConfigMap {DEPLOYMENT_CONFIG_NAME}")
        deadline = r.duration("progress-deadline", DEFAULT_PROGRESS_DEADLINE)
        if deadline <= 0:
            r.fail(f"progress-deadline={data.get('progress-deadline', '')!r}", "must be a positive duration")
        r.check()
        return cls(progress_deadline=deadline)


class NotOwnedError(Exception):
    """An SKS or Metric named like the PA exists but is not controlled by it."""


def revision_of(obj: Mapping[str, Any]) -> str:
    """The revision a PA / Metric belongs to: its revision label, else its own name."""
    meta = obj.get("metadata") or {}
    return str((meta.get("labels") or {}).get(REVISION_LABEL) or meta.get("name", ""))


def is_kpa(pa: Mapping[str, Any]) -> bool:
    """Only PAs of class exactly `kpa.autoscaling.knative.dev` are ours (§4.2)."""
    return ((pa.get("metadata") or {}).get("annotations") or {}).get("autoscaling.knative.dev/class") == KPA


def metric_spec_from_object(metric: Mapping[str, Any]) -> MetricSpec:
    """The collector's view of a Metric object; windows are integer nanoseconds in JSON (§7)."""
    spec = metric.get("spec") or {}
    ann = RevisionAnnotations.parse((metric.get("metadata") or {}).get("annotations"))

    def seconds(field: str, default: float) -> float:
        value = spec.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value) / 1e9
        return default

    stable = seconds("stableWindow", 60.0)
    return MetricSpec(
        stable_window=stable,
        panic_window=seconds("panicWindow", max(1.0, stable / 10)),
        scrape_target=str(spec.get("scrapeTarget") or ""),
        aggregation_algorithm=ann.metric_aggregation_algorithm,
    )


async def _update_status(
    key: str,
    desired: dict[str, Any],
    get_latest: Callable[[], Any],
    write: Callable[[dict[str, Any]], Any],
) -> None:
    """UpdateStatus with retry on conflict: the first try uses the cached object, later ones a
    fresh GET. A deleted object (404) is not an error: it went away mid-reconcile."""
    body = desired
    for attempt in range(STATUS_UPDATE_ATTEMPTS):
        try:
            await write(body)
            return
        except ApiException as exc:
            if is_not_found(exc):
                logger.debug("object deleted before its status could be written", extra=_fields(key))
                return
            if not is_conflict(exc) or attempt == STATUS_UPDATE_ATTEMPTS - 1:
                raise
        try:
            latest = await get_latest()
        except ApiException as exc:
            if is_not_found(exc):
                return
            raise
        if latest.get("status") == desired.get("status"):
            return
        body = copy.deepcopy(latest)
        body["status"] = copy.deepcopy(desired.get("status"))


class KPAReconciler:
    """Knative `kpa.Reconciler.ReconcileKind` plus the generated reconciler around it."""

    def __init__(
        self,
        api: KnativeAPI,
        *,
        pas: Informer,
        skss: Informer,
        metrics: Informer,
        pods: PodIndex,
        multiscaler: MultiScaler,
        config: ConfigStore,
        deployment_config: Callable[[], DeploymentConfig],
        prober: ActivatorProber,
        queue: WorkQueue,
        clock: Callable[[], float],
        is_leader: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.api = api
        self.pas = pas
        self.skss = skss
        self.metrics = metrics
        self.pods = pods
        self.multiscaler = multiscaler
        self.config = config
        self.deployment_config = deployment_config
        self.prober = prober
        self.queue = queue
        self.clock = clock
        self.is_leader = is_leader
        # key -> revision name, for the deciders' ready-pod count.
        self.revisions: dict[str, str] = {}
        # key -> (want, pod counts) of the last reconcile: the kn.revision.pods.* gauges, recorded
        # where Go's kpa.go reportMetrics records them (autoscaler/telemetry.py observes them).
        self.reported: dict[str, tuple[int, PodCounts]] = {}

    def ready_count(self, namespace: str, name: str) -> int:
        key = f"{namespace}/{name}"
        return self.pods.counts(namespace, self.revisions.get(key, name)).ready

    def forget(self, key: str) -> None:
        """Drops the in-memory state of a PA (deleted, or its bucket is no longer ours)."""
        ns, name = split_key(key)
        self.multiscaler.delete(ns, name)
        self.prober.cancel(key)
        self.revisions.pop(key, None)
        self.reported.pop(key, None)

    async def reconcile(self, key: str) -> None:
        if not self.is_leader(key):
            return
        ns, name = split_key(key)
        cached = self.pas.get(ns, name)
        if cached is None or not is_kpa(cached):
            # Deleted mid-flight (or no longer KPA class): SKS and Metric go with the PA through
            # their ownerReferences; only the in-memory decider and prober are ours to drop.
            self.forget(key)
            return
        if (cached.get("metadata") or {}).get("deletionTimestamp"):
            return
        pa = copy.deepcopy(cached)
        status = pa.get("status")
        if not isinstance(status, dict):
            status = {}
            pa["status"] = status
        st = PAStatus(status, self.clock)
        st.initialize()
        generation = (pa.get("metadata") or {}).get("generation")
        if status.get("observedGeneration") != generation:
            st.mark_unknown(READY, "NewObservedGenFailure", "unsuccessfully observed a new generation")

        error: Exception | None = None
        try:
            await self._reconcile_kind(key, pa, st)
        except Exception as exc:  # the status computed so far is still written, as in Go
            error = exc

        if generation is not None:
            status["observedGeneration"] = generation
        groom_transition_times(cached.get("status") or {}, status)
        # Both names are required by the CRD schema, even when empty (§4.2, §7).
        status.setdefault("serviceName", "")
        status.setdefault("metricsServiceName", "")
        if status != cached.get("status"):
            await _update_status(
                key,
                pa,
                lambda: self.api.get_pa(ns, name),
                self.api.update_pa_status,
            )
        if error is not None:
            raise error

    async def _reconcile_kind(self, key: str, pa: dict[str, Any], st: PAStatus) -> None:
        ns, name = split_key(key)
        config = self.config.current
        status = st.status
        self.revisions[key] = revision_of(pa)

        # 1. The SKS and its private service are a prerequisite for everything else.
        sks = self.skss.get(ns, name)
        if sks is None or not (sks.get("status") or {}).get("privateServiceName"):
            await self._reconcile_sks(pa, st, sks, PROXY, MIN_ACTIVATORS)
            st.mark_sks_not_ready(NO_PRIVATE_SERVICE_NAME)
            compute_status(pa, st, config, ready=0, want=SCALE_UNKNOWN)
            return

        # 2-4. Decider and Metric.
        status["metricsServiceName"] = sks["status"]["privateServiceName"]
        decider = self._reconcile_decider(ns, name, pa)
        await self._reconcile_metric(pa, st)

        # 5. Scale.
        want = await self._scale(key, pa, sks, decider.status.desired_scale)

        # 6-8. SKS mode and activator count.
        counts = self.pods.counts(ns, self.revisions[key])
        self.reported[key] = (want, counts)
        mode = compute_sks_mode(want, decider.status.excess_burst_capacity, st.is_inactive())
        sks = await self._reconcile_sks(pa, st, sks, mode, compute_num_activators(counts.ready, decider.spec))
        status["serviceName"] = str((sks.get("status") or {}).get("serviceName") or "")
        ready, message = sks_ready(sks)
        if ready:
            st.mark_sks_ready()
        else:
            st.mark_sks_not_ready(message)

        # 9. Status.
        logger.debug(
            "PA scale got=%d, want=%d, desiredPods=%d ebc=%d mode=%s",
            counts.ready,
            want,
            decider.status.desired_scale,
            decider.status.excess_burst_capacity,
            mode,
            extra=_fields(key),
        )
        compute_status(pa, st, config, counts.ready, want)

    def _reconcile_decider(self, ns: str, name: str, pa: Mapping[str, Any]) -> Decider:
        spec = make_decider_spec(pa, self.config.current)
        decider = self.multiscaler.get(ns, name)
        if decider is None:
            return self.multiscaler.create(ns, name, spec)
        if decider.spec != spec:
            return self.multiscaler.update(ns, name, spec)
        return decider

    async def _reconcile_sks(
        self, pa: Mapping[str, Any], st: PAStatus, sks: dict[str, Any] | None, mode: str, num_activators: int
    ) -> dict[str, Any]:
        want = make_sks(pa, mode, num_activators)
        meta = want["metadata"]
        if sks is None:
            try:
                created: dict[str, Any] = await self.api.create_sks(want)
                logger.info("created SKS in mode %s", mode, extra=_fields(f"{meta['namespace']}/{meta['name']}"))
                return created
            except ApiException as exc:
                if not is_conflict(exc):
                    raise
                # Created since our cache was filled (informer lag): carry on with the real one.
                sks = await self.api.get_sks(meta["namespace"], meta["name"])
        if not is_controlled_by(sks, pa):
            st.mark_resource_not_owned("ServerlessService", meta["name"])
            raise NotOwnedError(f"PA {meta['name']} does not own SKS {meta['name']}")
        if sks_spec_differs(sks, want):
            update = copy.deepcopy(sks)
            update["spec"] = want["spec"]
            logger.info(
                "updating SKS: mode %s, numActivators %d",
                mode,
                num_activators,
                extra=_fields(f"{meta['namespace']}/{meta['name']}"),
            )
            replaced: dict[str, Any] = await self.api.replace_sks(update)
            return replaced
        return sks

    async def _reconcile_metric(self, pa: Mapping[str, Any], st: PAStatus) -> None:
        want = make_metric(pa, make_metric_spec(pa, self.config.current))
        meta = want["metadata"]
        existing = self.metrics.get(meta["namespace"], meta["name"])
        if existing is None:
            try:
                await self.api.create_metric(want)
                return
            except ApiException as exc:
                if not is_conflict(exc):
                    raise
                existing = await self.api.get_metric(meta["namespace"], meta["name"])
        if not is_controlled_by(existing, pa):
            st.mark_resource_not_owned("Metric", meta["name"])
            raise NotOwnedError(f"PA {meta['name']} does not own Metric {meta['name']}")
        if metric_spec_differs(existing, want):
            update = copy.deepcopy(existing)
            update["spec"] = want["spec"]
            await self.api.replace_metric(update)

    async def _scale(self, key: str, pa: Mapping[str, Any], sks: Mapping[str, Any], desired: int) -> int:
        now = self.clock()
        config = self.config.current
        deadline = self.deployment_config().progress_deadline
        plan = plan_scale(pa, sks, desired, config, now, deadline)
        if plan.needs_probe:
            in_path = await self.prober.probe(pa)
            logger.info("probing activator = %s", in_path, extra=_fields(key))
            plan = plan_scale(pa, sks, desired, config, now, deadline, activator_in_path=in_path)
        if plan.start_async_probe:
            logger.info("PA is not yet backed by activator, cannot scale to zero", extra=_fields(key))
            self.prober.offer(key, pa, self.queue.add)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)
        if not plan.apply:
            return plan.desired
        ns = (pa.get("metadata") or {}).get("namespace", "")
        ref = (pa.get("spec") or {}).get("scaleTargetRef") or {}
        try:
            current = await self.api.get_replicas(ns, ref)
        except ApiException as exc:
            name = ref.get("name", "")
            raise RuntimeError(f"failed to get scale target {name!r}: {exc.status} {exc.reason}") from exc
        if current != plan.desired:
            logger.info("scaling from %d to %d", current, plan.desired, extra=_fields(key))
            await self.api.patch_replicas(ns, ref, plan.desired)
        return plan.desired


class MetricReconciler:
    """Knative `pkg/reconciler/metric`: keeps one collection per Metric and reports on it."""

    def __init__(
        self,
        api: KnativeAPI,
        *,
        metrics: Informer,
        collector: MetricCollector,
        clock: Callable[[], float],
        is_leader: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.collector = collector
        self.clock = clock
        self.is_leader = is_leader
        self.revisions: dict[str, str] = {}

    def forget(self, key: str) -> None:
        ns, name = split_key(key)
        self.collector.delete(ns, name)
        self.revisions.pop(key, None)

    async def reconcile(self, key: str) -> None:
        if not self.is_leader(key):
            return
        ns, name = split_key(key)
        cached = self.metrics.get(ns, name)
        if cached is None:
            self.forget(key)
            return
        if (cached.get("metadata") or {}).get("deletionTimestamp"):
            return
        self.revisions[key] = revision_of(cached)
        error = self.collector.create_or_update(ns, name, metric_spec_from_object(cached))

        metric = copy.deepcopy(cached)
        status = metric.get("status")
        if not isinstance(status, dict):
            status = {}
            metric["status"] = status
        cm = ConditionManager(status, (), self.clock)
        cm.initialize()
        generation = (metric.get("metadata") or {}).get("generation")
        if status.get("observedGeneration") != generation:
            cm.mark_unknown(READY, "NewObservedGenFailure", "unsuccessfully observed a new generation")
        if error is None:
            cm.mark_true(READY)
        elif isinstance(error, ScrapeError) and str(error) == "failed to get endpoints":
            cm.mark_unknown(READY, "NoEndpoints", str(error))
        else:
            # Not retried: the collector re-enqueues the Metric when its error changes.
            cm.mark_false(READY, "CollectionFailed", f"Failed to reconcile metric collection: {error}")
        if generation is not None:
            status["observedGeneration"] = generation
        groom_transition_times(cached.get("status") or {}, status)
        if status != cached.get("status"):
            await _update_status(key, metric, lambda: self.api.get_metric(ns, name), self.api.update_metric_status)
