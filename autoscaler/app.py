"""The autoscaler process wired together (CONTRACT.md §4): informers, the KPA and Metric
reconcilers, the collector and deciders, the stat server, leader election and stat forwarding.

`AutoscalerApp(api_client, options)` with `await start()` / `await stop()`; `__main__` builds the
options from the environment, tests build them directly. Everything Kubernetes goes through the
kubernetes-asyncio `api_client` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.config import ConfigError
from sluice.kube import ApiException
from sluice.logs import level_from_knative
from sluice.wire import Stat

from .bucket import BucketSet
from .collector import MetricCollector
from .config import CONFIG_NAME, ConfigStore
from .dropped import DroppedPayloads
from .forwarder import StatForwarder
from .kube import Informer, KnativeAPI, WorkQueue, call_obj, is_not_found, key_of, run_workers, split_key
from .leaderelection import LEADER_ELECTION_CONFIG_NAME, BucketElectors, LeaderElectionConfig
from .podaccessor import REVISION_LABEL, REVISION_UID_LABEL, PodIndex
from .prober import ActivatorProber
from .reconciler import (
    DEPLOYMENT_CONFIG_NAME,
    DeploymentConfig,
    KPAReconciler,
    MetricReconciler,
    is_kpa,
)
from .resources import MetricSpec
from .scaling import MultiScaler
from .scraper import METRICS_PORT, HTTPScrapeClient, ServiceScraper
from .statserver import STAT_SERVER_PORT, StatServer, local_sink
from .telemetry import TelemetryServers, start_telemetry

__all__ = ["AutoscalerApp", "Options"]

logger = logging.getLogger("autoscaler")

NETWORK_CONFIG_NAME = "config-network"
SYNC_LOG_AFTER = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    """Process-level settings (env, §4.1), with the Sluice overrides used where there is no cluster."""

    system_namespace: str = "knative-serving"
    pod_name: str = "autoscaler"
    pod_ip: str = "127.0.0.1"
    cluster_domain: str = "cluster.local"
    config_logging_name: str = "config-logging"
    stat_host: str = "0.0.0.0"
    stat_port: int = STAT_SERVER_PORT
    scrape_port: int = METRICS_PORT
    activator_probe_url: str | None = None
    activator_probe_endpoints: bool = False
    # False: act on every key without leases (single replica, tests). Knative always elects.
    leader_election: bool = True
    workers: int = 2
    # Overrides config-leader-election (tests use short leases).
    leader_election_config: LeaderElectionConfig | None = None
    # For the forwarder: how to reach another replica's stat server (tests: its port differs).
    forward_port: int = STAT_SERVER_PORT
    extra: Mapping[str, str] = field(default_factory=dict)
    # The decider debug endpoint (autoscaler/telemetry.py): "off", or host:port (loopback unless
    # debug_token is set). `__main__` defaults it to 127.0.0.1:8099.
    debug_address: str = "off"
    debug_token: str = ""


class AutoscalerApp:
    def __init__(self, api_client: Any, options: Options, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.clock = clock
        self.api = KnativeAPI(api_client)
        self.config = ConfigStore()
        self.deployment_config = DeploymentConfig()
        self.le_config = options.leader_election_config or LeaderElectionConfig()
        self.dropped = DroppedPayloads()
        self.pods = PodIndex()
        self.mesh_mode = "auto"
        self.use_passthrough_lb = False

        api = self.api
        self.pa_informer = Informer("podautoscalers", api.list_pas())
        self.sks_informer = Informer("serverlessservices", api.list_skss())
        self.metric_informer = Informer("metrics", api.list_metrics())
        self.pod_informer = Informer("pods", api.list_pods(), label_selector=REVISION_UID_LABEL)
        self.cm_informer = Informer("configmaps", api.list_configmaps(options.system_namespace))

        self.kpa_queue = WorkQueue()
        self.metric_queue = WorkQueue()
        self.collector = MetricCollector(clock, scraper_factory=self._make_scraper, dropped=self.dropped)
        self.multiscaler = MultiScaler(self.collector, self._ready_count, clock)
        self.prober = ActivatorProber(
            cluster_domain=options.cluster_domain,
            url_template=options.activator_probe_url,
            endpoints=api.first_ready_address if options.activator_probe_endpoints else None,
        )
        self.electors: BucketElectors | None = None
        self.kpa = KPAReconciler(
            api,
            pas=self.pa_informer,
            skss=self.sks_informer,
            metrics=self.metric_informer,
            pods=self.pods,
            multiscaler=self.multiscaler,
            config=self.config,
            deployment_config=lambda: self.deployment_config,
            prober=self.prober,
            queue=self.kpa_queue,
            clock=clock,
            is_leader=self.is_leader,
        )
        self.metric = MetricReconciler(
            api, metrics=self.metric_informer, collector=self.collector, clock=clock, is_leader=self.is_leader
        )
        self.forwarder = StatForwarder(
            self._bucket_set,
            self._bucket_holder,
            local=self._local_sink,
            port=options.forward_port,
            system_namespace=options.system_namespace,
            cluster_domain=options.cluster_domain,
            owns=self.owns_bucket,
        )
        self.stat_server = StatServer(self._sink, dropped=self.dropped, is_bucket_owner=self.owns_bucket)
        self._local = local_sink(self.collector, self.multiscaler)
        self._tasks: list[asyncio.Task[Any]] = []
        self._scrape_sessions: list[Any] = []
        self._direct_client: HTTPScrapeClient | None = None
        self._mesh_client: HTTPScrapeClient | None = None
        self.stat_port = 0
        self.telemetry: TelemetryServers | None = None

    # ---- ownership ----

    def is_leader(self, key: str) -> bool:
        return self.electors is None or self.electors.is_leader(key)

    def owns_bucket(self, bucket: str) -> bool:
        return self.electors is None or self.electors.owns_bucket(bucket)

    def _bucket_set(self) -> BucketSet | None:
        return self.electors.buckets if self.electors is not None else None

    def _bucket_holder(self, bucket: str) -> str:
        return self.electors.holder(bucket) if self.electors is not None else ""

    # ---- stats ----

    def _local_sink(self, key: str, stat: Stat, source: str) -> None:
        self._local(key, stat, source)

    def _sink(self, key: str, stat: Stat, source: str) -> None:
        """§4.9: stats for keys this replica owns are recorded here, others are forwarded."""
        if self.is_leader(key):
            self._local(key, stat, source)
        else:
            self.forwarder.forward(key, stat, source)

    def _ready_count(self, namespace: str, name: str) -> int:
        return self.kpa.ready_count(namespace, name)

    def _make_scraper(self, key: str, spec: MetricSpec) -> ServiceScraper | None:
        if self._direct_client is None or self._mesh_client is None:
            return None
        ns, name = split_key(key)
        revision = self.metric.revisions.get(key, name)
        return ServiceScraper(
            ns,
            spec.scrape_target,
            self.pods.accessor(ns, revision),
            self._direct_client,
            self._mesh_client,
            clock=self.clock,
            port=self.options.scrape_port,
            mesh_mode=self.mesh_mode,
            use_passthrough_lb=self.use_passthrough_lb,
        )

    # ---- events ----

    def _on_pa(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        if new is None or is_kpa(new) or (old is not None and is_kpa(old)):
            self.kpa_queue.add(key_of(obj))

    def _on_owned(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """SKS / Metric events re-enqueue their owning PA (same namespace and name)."""
        obj = new if new is not None else old
        if obj is None:
            return
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "PodAutoscaler":
                ns = (obj.get("metadata") or {}).get("namespace", "")
                self.kpa_queue.add(f"{ns}/{ref.get('name', '')}")

    def _on_metric(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        if obj is not None:
            self.metric_queue.add(key_of(obj))
        self._on_owned(kind, old, new)

    def _on_pod(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self.pods.on_event(kind, old, new)
        obj = new if new is not None else old
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        rev = (meta.get("labels") or {}).get(REVISION_LABEL)
        if rev:
            self.kpa_queue.add(f"{meta.get('namespace', '')}/{rev}")

    def _enqueue_all_pas(self) -> None:
        for pa in self.pa_informer.items():
            if is_kpa(pa):
                self.kpa_queue.add(key_of(pa))

    def _on_configmap(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            return  # Knative keeps the last configuration when a ConfigMap is deleted
        name = (new.get("metadata") or {}).get("name")
        data: dict[str, str] = dict(new.get("data") or {})
        if name == CONFIG_NAME:
            # Valid changes re-enqueue every KPA PA through the store's listener (§4.1).
            self.config.update(data)
        elif name == DEPLOYMENT_CONFIG_NAME:
            try:
                cfg = DeploymentConfig.from_configmap(data)
            except ConfigError as exc:
                logger.error("rejected %s update, keeping the previous configuration: %s", name, exc)
                return
            if cfg != self.deployment_config:
                self.deployment_config = cfg
                self._enqueue_all_pas()
        elif name == LEADER_ELECTION_CONFIG_NAME and self.options.leader_election_config is None:
            try:
                le = LeaderElectionConfig.from_configmap(data)
            except ConfigError as exc:
                logger.error("rejected %s update, keeping the previous configuration: %s", name, exc)
                return
            if le != self.le_config:
                self.le_config = le
                if self.electors is not None:
                    logger.info("%s changed: restarting leader election with %s", name, le)
                    self._spawn(self._restart_electors())
        elif name == self.options.config_logging_name:
            level = level_from_knative(data.get("loglevel.autoscaler", ""), data.get("zap-logger-config", ""))
            logging.getLogger().setLevel(level)

    # ---- leader election ----

    def _keys_in_bucket(self, keys: list[str], bucket: str) -> list[str]:
        if self.electors is None:
            return keys
        return [k for k in keys if self.electors.bucket_of(k) == bucket]

    def _promote(self, bucket: str) -> None:
        logger.info("promoted: now acting on bucket %s", bucket)
        for key in self._keys_in_bucket([key_of(m) for m in self.metric_informer.items()], bucket):
            self.metric_queue.add(key)
        for key in self._keys_in_bucket([key_of(pa) for pa in self.pa_informer.items() if is_kpa(pa)], bucket):
            self.kpa_queue.add(key)

    def _demote(self, bucket: str) -> None:
        logger.info("demoted: no longer acting on bucket %s", bucket)
        keys = set(self.kpa.revisions) | set(self.metric.revisions)
        for key in self._keys_in_bucket(sorted(keys), bucket):
            self.kpa.forget(key)
            self.metric.forget(key)

    def _make_electors(self) -> BucketElectors:
        o = self.options
        return BucketElectors(
            self.api,
            o.system_namespace,
            o.pod_name,
            o.pod_ip,
            self.le_config,
            on_promote=self._promote,
            on_demote=self._demote,
        )

    async def _restart_electors(self) -> None:
        if self.electors is not None:
            await self.electors.stop(release=True)
        self.electors = self._make_electors()
        self.electors.start()

    # ---- lifecycle ----

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _read_network_config(self) -> None:
        try:
            cm = await call_obj(
                self.api.core.read_namespaced_config_map, NETWORK_CONFIG_NAME, self.options.system_namespace
            )
        except ApiException as exc:
            if not is_not_found(exc):
                logger.warning("could not read %s, using defaults: %s", NETWORK_CONFIG_NAME, exc.status)
            return
        except Exception as exc:
            logger.warning("could not read %s, using defaults: %s", NETWORK_CONFIG_NAME, exc)
            return
        data = cm.get("data") or {}
        mode = str(data.get("mesh-compatibility-mode", "auto")).lower()
        self.mesh_mode = mode if mode in ("auto", "enabled", "disabled") else "auto"
        self.use_passthrough_lb = str(data.get("enable-mesh-pod-addressability", "")).lower() == "true"

    async def _wait_synced(self, informers: list[Informer]) -> None:
        waits = [asyncio.ensure_future(i.synced.wait()) for i in informers]
        _, pending = await asyncio.wait(waits, timeout=SYNC_LOG_AFTER)
        if pending:
            names = [i.name for i in informers if not i.synced.is_set()]
            logger.warning("still waiting for informers to sync: %s", ", ".join(names))
            await asyncio.gather(*pending)

    async def start(self) -> None:
        o = self.options
        # The stat server first: activators are unready while their websocket is down (§7).
        self.stat_port = await self.stat_server.start(o.stat_host, o.stat_port)
        logger.info("stat server listening on %s:%d", o.stat_host, self.stat_port)

        self._direct_client = HTTPScrapeClient(HTTPScrapeClient.create_session(keep_alive=True), self.dropped)
        self._mesh_client = HTTPScrapeClient(HTTPScrapeClient.create_session(keep_alive=False), self.dropped)
        self.config.on_change(lambda cfg: self._enqueue_all_pas())

        self.cm_informer.add_handler(self._on_configmap)
        self.pa_informer.add_handler(self._on_pa)
        self.sks_informer.add_handler(self._on_owned)
        self.metric_informer.add_handler(self._on_metric)
        self.pod_informer.add_handler(self._on_pod)

        await self._read_network_config()
        self._spawn(self.cm_informer.run(), "informer configmaps")
        await self._wait_synced([self.cm_informer])
        informers = [self.pa_informer, self.sks_informer, self.metric_informer, self.pod_informer]
        for inf in informers:
            self._spawn(inf.run(), f"informer {inf.name}")
        await self._wait_synced(informers)

        self.telemetry = await start_telemetry(self, o)
        self.multiscaler.watch(self.kpa_queue.add)
        self.collector.watch(self.metric_queue.add)
        self._spawn(self.multiscaler.run(), "multiscaler")
        self._spawn(run_workers("metric", self.metric_queue, self.metric.reconcile, o.workers), "metric workers")
        self._spawn(run_workers("kpa", self.kpa_queue, self.kpa.reconcile, o.workers), "kpa workers")
        if o.leader_election:
            self.electors = self._make_electors()
            self.electors.start()
        logger.info("autoscaler started")

    async def stop(self) -> None:
        """SIGTERM: release the leases, close websockets with 1012, stop everything (§4.9, §4.10)."""
        if self.electors is not None:
            await self.electors.stop(release=True)
        await self.stat_server.shutdown()
        if self.telemetry is not None:
            await self.telemetry.stop()
        await self.forwarder.close()
        self.kpa_queue.close()
        self.metric_queue.close()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.collector.close()
        await self.prober.close()
        for client in (self._direct_client, self._mesh_client):
            if client is not None:
                await client.session.close()  # the SimpleClient's pools
        logger.info("autoscaler stopped")
