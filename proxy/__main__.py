"""`sluice-queue-proxy` / `python -m proxy`: parses the environment and wires the
queue-proxy's listeners (CONTRACT.md §2). No logic lives here.

The queue-proxy sidecar of a Knative revision pod, configured by the environment the Knative
controller injects (§2.1: SERVING_*, USER_PORT, QUEUE_SERVING_PORT, CONTAINER_CONCURRENCY,
REVISION_TIMEOUT_SECONDS, ...). It needs no Kubernetes API."""

from __future__ import annotations

import gc
import sys

# Started as the sidecar (`python -m proxy`, or the image's `sluice-queue-proxy` script importing
# main()), the imports below make ~10^5 objects that all live as long as the process: collections
# during them find nothing to free. Imported by anything else (tests, tools), nothing changes.
_STARTING = __name__ == "__main__" or sys.argv[0].endswith("sluice-queue-proxy")
if _STARTING:
    gc.disable()

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sluice import aio
from sluice.config import ConfigError, parse_go_bool
from sluice.http.client import UpstreamPool
from sluice.http.forward import WEBSOCKET_CLOSE_GRACE
from sluice.http.server import HttpServer
from sluice.logs import configure_logging, level_from_knative
from sluice.periodic import Ticker
from sluice.wire import Stat, encode_stat

from .config import QueueProxyConfig
from .drain import Drainer
from .handler import WATCHED_HEADERS, QueueProxy
from .observability import LEGACY_ENV, ObservabilityConfig
from .readiness import ReadinessProber, parse_readiness_probes
from .servers import AdminHandler, StatsHandler

if _STARTING:
    # Frozen before the collector is back: re-enabled alone, its first pass would walk everything
    # the imports made and cost what was saved (bench/RESULTS.md, issue 19: -3 to -4 ms of start-up
    # CPU with the freeze, none without). Later full collections skip these objects too.
    gc.freeze()
    gc.enable()

if TYPE_CHECKING:
    from .metrics import QueueProxyMetrics
    from .observer import QueueProxyObserver
    from .telemetry import QueueProxyTelemetry

log = logging.getLogger("queueproxy")

# How long after a preStop `/wait-for-drain` without SIGTERM the drain is undone (§2.11).
_DRAIN_RESET_AFTER = 1.0
_STATS_PERIOD = 1.0
_GO_IN_FLIGHT_GRACE = 60.0  # §2.11
# Before the kubelet's SIGKILL: time for websocket Close frames to be answered (WEBSOCKET_CLOSE_GRACE).
LONG_LIVED_CLOSE_MARGIN = WEBSOCKET_CLOSE_GRACE + 0.5


def build_observer(
    cfg: QueueProxyConfig, obs: ObservabilityConfig, metrics: QueueProxyMetrics | None
) -> QueueProxyObserver | None:
    """Request logs and user metrics, or None when neither is configured (§2.10). The observer and
    the template interpreter load only then: a default pod does not pay for them (issue 19)."""
    if metrics is None and not obs.request_log_enabled:
        return None
    from .observer import QueueProxyObserver
    from .requestlog import RequestLogRevision, RequestLogTemplate

    template = RequestLogTemplate.parse(obs.request_log_template) if obs.request_log_enabled else None
    if metrics is None and template is None:
        return None
    revision = RequestLogRevision(
        name=cfg.serving_revision,
        namespace=cfg.serving_namespace,
        service=cfg.serving_service,
        configuration=cfg.serving_configuration,
        pod_name=cfg.serving_pod,
        pod_ip=cfg.serving_pod_ip,
    )
    return QueueProxyObserver(
        metrics,
        template,
        revision,
        log_probes=obs.enable_probe_request_log,
        has_breaker=cfg.container_concurrency > 0,
    )


class QueueProxyProcess:
    def __init__(
        self,
        cfg: QueueProxyConfig,
        prober: ReadinessProber | None,
        obs: ObservabilityConfig | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.obs = obs or ObservabilityConfig()
        # Metrics and tracing modules (and the OpenTelemetry SDK) load only when configured (§2.2).
        self.telemetry: QueueProxyTelemetry | None = None
        if self.obs.metrics_export.enabled or self.obs.trace_export.enabled:
            from .telemetry import QueueProxyTelemetry

            depth = self._queue_depth if cfg.container_concurrency > 0 else None
            try:
                self.telemetry = QueueProxyTelemetry(cfg, self.obs, environ or {}, depth)
            except ImportError as exc:
                from sluice.telemetry.config import missing_extra

                log.error(missing_extra(exc))
        telemetry = self.telemetry
        self.observer = build_observer(cfg, self.obs, telemetry.metrics if telemetry is not None else None)
        self.started = time.monotonic()
        self.drainer = Drainer(cfg.drain_quiet_period)
        cc = cfg.container_concurrency
        # Idle keep-alive pool size = cc, or 1000 when unlimited (§2.6).
        self.pool = UpstreamPool("127.0.0.1", cfg.user_port, max_idle=cc if cc > 0 else 1000)
        self.handler = QueueProxy(
            self.pool,
            cc,
            timeout=float(cfg.revision_timeout_seconds),
            response_start_timeout=float(cfg.revision_response_start_timeout_seconds),
            idle_timeout=float(cfg.revision_idle_timeout_seconds),
            drainer=self.drainer,
            readiness=prober,
            observer=self.observer,
            tracer=telemetry.tracer if telemetry is not None else None,
        )
        self.main_server = HttpServer(self.handler, watch=WATCHED_HEADERS)
        self.stats = StatsHandler()
        self.stats.body = encode_stat(Stat(pod_name=cfg.serving_pod))  # before the first tick
        self.stats_server = HttpServer(self.stats)
        self.admin_server = HttpServer(AdminHandler(self.wait_for_drain))
        self.user_metrics_server: HttpServer | None = None
        export = telemetry.export if telemetry is not None else None
        if export is not None and export.registry is not None:
            from sluice.telemetry.metrics import ScrapeHandler

            self.user_metrics_server = HttpServer(ScrapeHandler(export))
        self.sigterm = asyncio.Event()
        self.stopped = asyncio.Event()
        # The 1 s Stat tick (§2.9); a Ticker so a stall or a raising tick cannot end it (issue 13).
        self.stats_ticker = Ticker(_STATS_PERIOD, self._tick, name="queue-proxy stats", logger=log)

    def _queue_depth(self) -> int:
        breaker = self.handler.breaker
        return breaker.admitted if breaker is not None else 0

    async def start(self) -> None:
        cfg = self.cfg
        host = cfg.bind_host or None
        await self.main_server.listen(host, cfg.queue_serving_port)
        tls = self._tls_context()
        if tls is not None:
            await self.main_server.listen(host, cfg.queue_serving_tls_port, ssl=tls)
        await self.admin_server.listen(host, cfg.admin_port)
        await self.stats_server.listen(host, cfg.metrics_port)
        address = self.obs.prometheus_address()
        if self.user_metrics_server is not None and address is not None:
            metrics_host = address[0] or host
            port = cfg.user_metrics_port if cfg.user_metrics_port is not None else address[1]
            await self.user_metrics_server.listen(metrics_host, port)
        self.stats_ticker.start()
        log.info(
            "queue-proxy serving",
            extra={"fields": {"port": cfg.queue_serving_port, "tls": tls is not None,
                              "containerConcurrency": cfg.container_concurrency}},
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        # TLS only when both files exist at start (§2.3).
        cert = os.path.join(self.cfg.cert_dir, "tls.crt")
        key = os.path.join(self.cfg.cert_dir, "tls.key")
        if not (os.path.isfile(cert) and os.path.isfile(key)):
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
        ctx.minimum_version = versions.get(self.cfg.tls_min_version, ssl.TLSVersion.TLSv1_3)
        if self.cfg.tls_max_version:
            ctx.maximum_version = versions[self.cfg.tls_max_version]
        ctx.load_cert_chain(cert, key)
        # h2 hook: HTTP/2 over TLS by ALPN, as Go's TLS server offers it (§2.3, §2.6).
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx

    def _tick(self) -> None:
        # A fixed 1 s cadence from process start, like Go's ticker (§2.9).
        avg_c, avg_p, reqs, proxied = self.handler.report()
        self.stats.body = encode_stat(
            Stat(
                pod_name=self.cfg.serving_pod,
                average_concurrent_requests=avg_c,
                average_proxied_concurrent_requests=avg_p,
                request_count=reqs,
                proxied_request_count=proxied,
                process_uptime=time.monotonic() - self.started,
            )
        )

    def long_lived_deadline(self, term_at: float, drained_at: float) -> float:
        """Until when open requests may run after SIGTERM. Go waits 60 s and then exits,
        cutting websockets (§2.11); here they get up to the revision timeout, which is
        also the pod's terminationGracePeriodSeconds (the kubelet's SIGKILL), less the
        time the Close handshake needs; never before the drain ended. Go's 60 s only
        without a revision timeout; SLUICE_SHUTDOWN_IN_FLIGHT_TIMEOUT caps it after the drain."""
        timeout = self.cfg.revision_timeout_seconds
        if timeout > 0:
            deadline = max(drained_at, term_at + timeout - LONG_LIVED_CLOSE_MARGIN)
        else:
            deadline = drained_at + _GO_IN_FLIGHT_GRACE
        cap = self.cfg.shutdown_in_flight_timeout
        return min(deadline, drained_at + cap) if cap > 0 else deadline

    async def _end_long_lived(self, close_at: float) -> bool:
        """Waits for in-flight requests until `close_at`, then ends what is left cleanly;
        False if some remain even so."""
        handler = self.handler
        if await handler.wait_idle(max(0.0, close_at - time.monotonic())):
            return True
        ended = handler.end_long_lived()
        log.info("closing long-lived requests at the drain deadline", extra={"fields": {"ended": ended}})
        # The requests are over; their sockets close once the Close handshakes are answered.
        give_up = time.monotonic() + LONG_LIVED_CLOSE_MARGIN
        # (Polled: the server signals no event when a tunnelled connection closes.)
        while self.main_server.connections and time.monotonic() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not (handler.in_flight or self.main_server.connections)

    async def wait_for_drain(self) -> None:
        """preStop: drain; if SIGTERM does not follow within 1 s (a container restart,
        not a pod deletion), undo the drain so serving resumes (§2.11)."""
        loop = asyncio.get_running_loop()

        def maybe_reset() -> None:
            if not self.sigterm.is_set():
                log.info("no SIGTERM after wait-for-drain; resuming normal serving")
                self.drainer.reset()

        loop.call_later(_DRAIN_RESET_AFTER, maybe_reset)
        await self.drainer.drain()

    @property
    def port(self) -> int:
        return self.main_server.ports[0]

    @property
    def admin_port(self) -> int:
        return self.admin_server.ports[0]

    @property
    def metrics_port(self) -> int:
        return self.stats_server.ports[0]

    async def close(self) -> None:
        """Stops at once, without draining (tests and failed starts)."""
        self.stats_ticker.stop()
        for server in (self.main_server, self.admin_server, self.stats_server, self.user_metrics_server):
            if server is None:
                continue
            server.stop_accepting()
            for conn in list(server.connections):
                conn.close()
        self.handler.deadlines.close()
        self.pool.close()
        if self.telemetry is not None:
            self.telemetry.shutdown()
        self.stopped.set()

    async def shutdown(self) -> None:
        """SIGTERM (§2.11): drain until quiet, stop the servers gracefully, wait for
        in-flight requests including websockets and event streams (see
        `long_lived_deadline`), end what is left cleanly, then exit 0."""
        log.info("received TERM signal, draining")
        term_at = time.monotonic()
        await self.drainer.drain()
        log.info("drained; shutting down servers")
        close_at = self.long_lived_deadline(term_at, time.monotonic())
        await self.main_server.shutdown(timeout=max(0.0, close_at - time.monotonic()))
        if not await self._end_long_lived(close_at):
            log.warning(
                "in-flight requests remain after the shutdown grace",
                extra={"fields": {"inFlight": self.handler.in_flight}},
            )
        self.stats_ticker.stop()
        await self.admin_server.shutdown(timeout=1.0)
        await self.stats_server.shutdown(timeout=1.0)
        if self.user_metrics_server is not None:
            await self.user_metrics_server.shutdown(timeout=1.0)
        self.pool.close()
        # OTLP: the last interval's metrics and the batched spans leave before exit.
        if self.telemetry is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.telemetry.shutdown)
        self.stopped.set()


async def serve(cfg: QueueProxyConfig, prober: ReadinessProber | None, obs: ObservabilityConfig) -> int:
    proc = QueueProxyProcess(cfg, prober, obs, os.environ)
    loop = asyncio.get_running_loop()
    shutdown_tasks: list[asyncio.Task[None]] = []
    started = False

    def on_term() -> None:
        if not proc.sigterm.is_set():
            proc.sigterm.set()
            if started:
                shutdown_tasks.append(loop.create_task(proc.shutdown()))

    # Handlers first: a SIGTERM that lands while the listeners open must still
    # take the graceful path, not the default "die at once".
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_term)
    try:
        await proc.start()
    except OSError as exc:
        log.error(f"failed to start a listener: {exc}")
        return 1
    started = True
    if proc.sigterm.is_set():
        shutdown_tasks.append(loop.create_task(proc.shutdown()))
    await proc.stopped.wait()
    log.info("queue-proxy stopped")
    return 0


def main() -> None:
    if sys.argv[1:]:  # argparse only then: the sidecar's start-up time matters
        from sluice.entrypoint import component_args, env_keys

        component_args("sluice-queue-proxy", __doc__, env_keys(QueueProxyConfig.from_env))
    try:
        cfg = QueueProxyConfig.from_env(os.environ)
        probes = parse_readiness_probes(cfg.serving_readiness_probe, cfg.enable_multi_container_probes)
        obs = ObservabilityConfig.from_json(cfg.observability_config)
        if obs.request_log_enabled:
            from .requestlog import RequestLogTemplate

            RequestLogTemplate.parse(obs.request_log_template)  # a bad template stops the start
        if os.environ.get(LEGACY_ENV):
            try:
                parse_go_bool(os.environ[LEGACY_ENV])
            except ValueError:
                raise ValueError(f"{LEGACY_ENV}: expected true or false, got {os.environ[LEGACY_ENV]!r}") from None
    except (ConfigError, ValueError) as exc:
        print(f"sluice-queue-proxy: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging(
        "queueproxy",
        level_from_knative(cfg.serving_logging_level, cfg.serving_logging_config),
        {"knative.dev/key": cfg.log_key, "knative.dev/pod": cfg.serving_pod},
    )
    prober = ReadinessProber(probes, http2_auto_detection=cfg.enable_http2_auto_detection) if probes else None
    sys.exit(aio.run(serve(cfg, prober, obs)))


if __name__ == "__main__":
    main()
