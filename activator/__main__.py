"""`sluice-activator` / `python -m activator`: parses the configuration and wires the
activator's objects (CONTRACT.md §3). No request logic lives here.

Configured by its environment as Knative's activator is (§3.1): `POD_NAME`, `POD_IP` (required),
`SYSTEM_NAMESPACE`, `CONFIG_LOGGING_NAME`, `CONFIG_OBSERVABILITY_NAME`, the proxy pool sizes and
probe timings; `SLUICE_*` variables override ports, the autoscaler's URL and the drain sleep for
running without a cluster network (`sluice local`, tests). It reads `config-network`,
`config-observability` and `config-logging` and watches revisions, endpoints and services, so it
needs a Kubernetes API: in-cluster, or the kubeconfig in SLUICE_KUBECONFIG / KUBECONFIG."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sluice import aio
from sluice.config import ConfigError
from sluice.http.server import HttpServer, ServerLimits
from sluice.logs import configure_logging, level_from_knative
from sluice.periodic import Ticker
from sluice.telemetry.config import missing_extra
from sluice.telemetry.debug import parse_debug_address
from sluice.wire import WireStatMessage

from .backends import BackendManager, BackendSettings, PoolRegistry
from .config import ActivatorConfig, NetworkConfig, ObservabilityConfig
from .handler import WATCHED_HEADERS, ActivatorHandler
from .kube import CoreV1, CustomObjects, Informer, make_api_client, read_configmap
from .reporter import StatReporter
from .revision import RevKey
from .revisions import Revisions
from .stats import ConcurrencyReporter
from .tls import SECRET_NAME, TRUST_BUNDLE_LABEL, TLSMaterial, parse_tls_version

if TYPE_CHECKING:
    from .telemetry import ActivatorTelemetry

log = logging.getLogger("activator")

DEFAULT_DEBUG_PORT = 8098  # the activator's /debug/revisions, loopback by default

_REPORT_PERIOD = 1.0  # §3.8
SERVING_GROUP, SERVING_VERSION, REVISIONS = "serving.knative.dev", "v1", "revisions"
PRIVATE_ENDPOINTS = "serving.knative.dev/revisionUID,networking.internal.knative.dev/serviceType=Private"
PUBLIC_ENDPOINTS = "networking.internal.knative.dev/serviceType=Public,serving.knative.dev/revision"
PRIVATE_SERVICES = "networking.internal.knative.dev/serviceType=Private"


class Health:
    """§1.3: healthy iff no SIGTERM yet and the autoscaler websocket is up."""

    def __init__(self, reporter: StatReporter) -> None:
        self.reporter = reporter
        self.terminating = False

    def error(self) -> str | None:
        if self.terminating:
            return "received SIGTERM from kubelet"
        if not self.reporter.connected:
            return "connection has not yet been established"
        return None


class StatSenderAdapter:
    def __init__(self, reporter: StatReporter) -> None:
        self.reporter = reporter

    def send(self, messages: list[WireStatMessage]) -> None:
        self.reporter.send(messages)


class ActivatorProcess:
    def __init__(
        self,
        cfg: ActivatorConfig,
        api_client: Any,
        network: NetworkConfig | None = None,
        observability: ObservabilityConfig | None = None,
        debug_address: tuple[str, int] | None = None,
        debug_token: str = "",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.api_client = api_client
        self.network = network or NetworkConfig()
        self.observability = observability or ObservabilityConfig()
        mesh_mode = cfg.mesh_compatibility_mode or self.network.mesh_compatibility_mode
        # §3.1/§3.2/§3.7: system-internal TLS, read once at start like the other config-network keys.
        self.tls: TLSMaterial | None = None
        if self.network.system_internal_tls:
            self.tls = TLSMaterial(parse_tls_version(cfg.tls_min_version), parse_tls_version(cfg.tls_max_version))
        self.pools = PoolRegistry(cfg.max_idle_proxy_conns_per_host, self.tls, pod_tls_port=cfg.queue_tls_port)
        self.revisions = Revisions(self.pools, cfg.pod_ip, cfg.queue_depth)
        self.backends = BackendManager(
            BackendSettings(
                probe_timeout=cfg.probe_timeout,
                probe_frequency=cfg.probe_frequency,
                cold_probe_frequency=min(cfg.probe_frequency, 0.02),
                mesh_mode=mesh_mode,
                pod_addressability=self.network.enable_mesh_pod_addressability,
            ),
            self.pools,
            self.revisions.publish,
            self._lookup,
            self.revisions.has_waiters,
        )
        self.concurrency = ConcurrencyReporter(cfg.pod_name)
        self.last_concurrency: dict[RevKey, float] = {}
        self.reporter = StatReporter(cfg.autoscaler_url)
        self.health = Health(self.reporter)
        # Metrics and tracing (§3.10) load only when config-observability asks for them.
        self.telemetry: ActivatorTelemetry | None = None
        obs = self.observability
        if obs.metrics.enabled or obs.tracing.enabled:
            from .telemetry import ActivatorTelemetry

            try:
                self.telemetry = ActivatorTelemetry(
                    obs, self.revisions, lambda: self.last_concurrency, lambda: self.reporter.connected,
                    lambda: self.reporter.connection_errors, cfg.system_namespace, cfg.pod_name, environ or {},
                )  # fmt: skip
            except ImportError as exc:
                log.error(missing_extra(exc))
        telemetry = self.telemetry
        self.handler = ActivatorHandler(
            self.revisions,
            self.concurrency,
            StatSenderAdapter(self.reporter),
            self.health,
            self.backends,
            cfg.cluster_domain,
            pod_addressability=self.network.enable_mesh_pod_addressability,
            observer=telemetry.metrics if telemetry is not None else None,
            tracer=telemetry.tracer if telemetry is not None else None,
        )
        # §3.2: read-header timeout 60 s.
        self.server = HttpServer(self.handler, watch=WATCHED_HEADERS, limits=ServerLimits(read_header_timeout=60.0))
        self.metrics_server: HttpServer | None = None
        export = telemetry.export if telemetry is not None else None
        if export is not None and export.registry is not None:
            from sluice.telemetry.metrics import ScrapeHandler

            self.metrics_server = HttpServer(ScrapeHandler(export))
        # The activator's view of its revisions (pods, capacity, queue), loopback or token.
        self.debug_address = debug_address
        self.debug_server: HttpServer | None = None
        if debug_address is not None:
            from sluice.telemetry.debug import DebugHandler

            from .telemetry import revisions_view

            routes = {"/debug/revisions": lambda: revisions_view(self.revisions, self.last_concurrency)}
            self.debug_server = HttpServer(DebugHandler(routes, debug_token))
        self.informers: list[Informer] = []
        self.stopped = asyncio.Event()
        # The 1 s report tick (§3.8); a Ticker so a stall or a raising tick cannot end it (issue 13).
        self.report_ticker = Ticker(_REPORT_PERIOD, self._tick, name="activator stats report", logger=log)

    def _lookup(self, key: RevKey) -> Any:
        entry = self.revisions.get(key)
        return entry.info if entry is not None else None

    # ---- informers --------------------------------------------------------------------

    def _on_revision(self, kind: str, obj: dict[str, Any]) -> None:
        key = self.revisions.revision_event(kind, obj)
        if kind != "DELETED":
            self.backends.revision_changed(key)

    def _make_informers(self) -> list[Informer]:
        # The methods called, not kubernetes_asyncio's generated API modules (sluice.kube.rest).
        core = CoreV1(self.api_client)
        custom = CustomObjects(self.api_client)

        async def list_revisions(**kw: Any) -> Any:
            return await custom.list_cluster_custom_object(SERVING_GROUP, SERVING_VERSION, REVISIONS, **kw)

        informers = [
            Informer("revisions", list_revisions, self._on_revision),
            Informer("services", core.list_service_for_all_namespaces, self.backends.service_event, PRIVATE_SERVICES),
            Informer(
                "private-endpoints",
                core.list_endpoints_for_all_namespaces,
                self.backends.endpoints_event,
                PRIVATE_ENDPOINTS,
            ),
            Informer(
                "public-endpoints",
                core.list_endpoints_for_all_namespaces,
                self.revisions.public_endpoints_event,
                PUBLIC_ENDPOINTS,
            ),
        ]
        if self.tls is not None:
            # §3.1: Secret `routing-serving-certs` and the trust-bundle ConfigMaps, system namespace only.
            ns = self.cfg.system_namespace

            async def list_secrets(**kw: Any) -> Any:
                return await core.list_namespaced_secret(ns, field_selector=f"metadata.name={SECRET_NAME}", **kw)

            async def list_bundles(**kw: Any) -> Any:
                return await core.list_namespaced_config_map(ns, **kw)

            informers += [
                Informer("tls-secret", list_secrets, self.tls.secret_event),
                Informer("trust-bundles", list_bundles, self.tls.bundle_event, TRUST_BUNDLE_LABEL),
            ]
        return informers

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, sync_timeout: float = 30.0) -> None:
        cfg = self.cfg
        self.reporter.start()
        self.informers = self._make_informers()
        for informer in self.informers:
            informer.start()
        # Serve only once the caches are filled (Go waits for informer sync too): a
        # request before that would get a 404 for a revision that exists.
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.informers)), sync_timeout)
        host = cfg.bind_host or None
        await self.server.listen(host, cfg.http1_port)
        await self.server.listen(host, cfg.h2c_port)
        if self.tls is not None:
            # §3.2: 8112, same handler over TLS; the certificate follows the secret per handshake.
            await self.server.listen(host, cfg.https_port, ssl=self.tls.listening)
        if self.metrics_server is not None:
            address = self.observability.metrics.prometheus_address(cfg.metrics_port)
            assert address is not None
            await self.metrics_server.listen(address[0] or host, address[1])
        if self.debug_server is not None and self.debug_address is not None:
            await self.debug_server.listen(*self.debug_address)
        self.report_ticker.start()
        log.info("activator serving", extra={"fields": {"ports": self.server.ports, "autoscaler": cfg.autoscaler_url}})

    def _tick(self) -> None:
        messages = self.concurrency.report(time.monotonic())
        self.last_concurrency = {
            (m.namespace, m.name): m.stat.average_concurrent_requests for m in messages if m.stat is not None
        }
        self.reporter.send(messages)

    @property
    def port(self) -> int:
        return self.server.ports[0]

    @property
    def h2c_port(self) -> int:
        return self.server.ports[1]

    @property
    def https_port(self) -> int:
        """The TLS port (§3.2); 0 when system-internal TLS is off."""
        return self.server.ports[2] if self.tls is not None else 0

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.ports[0] if self.metrics_server is not None else 0

    @property
    def debug_port(self) -> int:
        return self.debug_server.ports[0] if self.debug_server is not None else 0

    async def close(self) -> None:
        """Stops at once without the 45 s drain (tests, failed starts)."""
        self.report_ticker.stop()
        servers = [self.server] + [s for s in (self.metrics_server, self.debug_server) if s is not None]
        for server in servers:
            server.stop_accepting()
            for conn in list(server.connections):
                conn.close()
        await self._stop_background()
        self.stopped.set()

    async def _stop_background(self) -> None:
        for informer in self.informers:
            await informer.stop()
        await self.backends.close()
        await self.reporter.close()
        self.handler.deadlines.close()
        self.revisions.close_all()
        self.pools.close()
        if self.telemetry is not None:
            # OTLP: the last interval's metrics and the batched spans leave before exit.
            await asyncio.get_running_loop().run_in_executor(None, self.telemetry.shutdown)

    async def shutdown(self) -> None:
        """SIGTERM (§3.9): fail health checks now, keep serving for the drain sleep
        (45 s) so the SKS and load balancers take this activator out of the path, then
        stop the servers gracefully, waiting for in-flight requests without limit."""
        self.health.terminating = True
        log.info(f"received SIGTERM; draining for {self.cfg.drain_sleep:g}s")
        await asyncio.sleep(self.cfg.drain_sleep)
        await self.server.shutdown()
        await self.handler.wait_idle()
        self.report_ticker.stop()
        for server in (self.metrics_server, self.debug_server):
            if server is not None:
                await server.shutdown(timeout=1.0)
        await self._stop_background()
        self.stopped.set()


async def _read_configmaps(cfg: ActivatorConfig, api_client: Any) -> tuple[NetworkConfig, ObservabilityConfig, int]:
    ns = cfg.system_namespace
    network = NetworkConfig.from_configmap(await read_configmap(api_client, ns, "config-network"))
    observability = ObservabilityConfig.from_configmap(
        await read_configmap(api_client, ns, cfg.config_observability_name)
    )
    logging_cm = await read_configmap(api_client, ns, cfg.config_logging_name)
    level = level_from_knative(logging_cm.get("loglevel.activator", ""), logging_cm.get("zap-logger-config", ""))
    return network, observability, level


async def serve(cfg: ActivatorConfig) -> int:
    try:
        api_client = await make_api_client(cfg.kubeconfig)
    except Exception as exc:  # NoClusterError, or a kubeconfig kubernetes-asyncio refuses
        log.error(f"cannot configure the Kubernetes client: {exc}")
        return 1
    try:
        try:
            network, observability, level = await _read_configmaps(cfg, api_client)
        except (ConfigError, ValueError) as exc:
            log.error(str(exc))
            return 1
        logging.getLogger().setLevel(level)
        try:
            debug = parse_debug_address(os.environ.get("SLUICE_DEBUG_ADDRESS", ""), DEFAULT_DEBUG_PORT)
        except ValueError as exc:
            log.error(f"SLUICE_DEBUG_ADDRESS: {exc}")
            return 1
        proc = ActivatorProcess(
            cfg, api_client, network, observability, debug, os.environ.get("SLUICE_DEBUG_TOKEN", ""), os.environ
        )
        try:
            await proc.start()
        except (OSError, TimeoutError) as exc:
            log.error(f"failed to start: {exc!r}")
            await proc.close()
            return 1
        # The Kubernetes client and aiohttp leave ~10^5 long-lived objects behind; moving
        # them out of the collector's reach keeps full collections (which otherwise walk
        # them all, tens of ms each) off the request path.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        shutdown_tasks: list[asyncio.Task[None]] = []

        def on_term() -> None:
            if not proc.health.terminating:
                shutdown_tasks.append(loop.create_task(proc.shutdown()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_term)
        await proc.stopped.wait()
        log.info("activator stopped")
        return 0
    finally:
        await api_client.close()


def main() -> None:
    if sys.argv[1:]:
        from sluice.entrypoint import component_args, env_keys

        component_args("sluice-activator", __doc__, env_keys(ActivatorConfig.from_env))
    try:
        cfg = ActivatorConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"sluice-activator: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging("activator", logging.INFO, {"knative.dev/pod": cfg.pod_name})
    sys.exit(aio.run(serve(cfg)))


if __name__ == "__main__":
    main()
