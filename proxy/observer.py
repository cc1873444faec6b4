"""Per-request telemetry for the queue-proxy (CONTRACT.md §2.10): request-log lines
and the user metrics (Prometheus on :9091 or OTLP). Built only when configured, so a
default pod pays nothing per request for either."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, BinaryIO

from sluice.http.server import HttpExchange

from .requestlog import RequestLogInput, RequestLogRevision, RequestLogTemplate

if TYPE_CHECKING:
    from sluice.telemetry.hooks import DoneRequest

    from .metrics import QueueProxyMetrics

__all__ = ["QueueProxyObserver"]

log = logging.getLogger("queueproxy")


class QueueProxyObserver:
    def __init__(
        self,
        metrics: QueueProxyMetrics | None,
        request_log: RequestLogTemplate | None,
        revision: RequestLogRevision,
        log_probes: bool = False,
        has_breaker: bool = True,
        out: BinaryIO | None = None,
    ) -> None:
        self.metrics = metrics
        self.request_log = request_log
        self.revision = revision
        self.log_probes = log_probes
        self.has_breaker = has_breaker
        self.out = out if out is not None else sys.stdout.buffer

    def on_request_done(self, ex: HttpExchange, done: DoneRequest) -> None:
        metrics = self.metrics
        if metrics is not None:
            status = ex.status or 500
            metrics.observe_invocation(status, done.latency)
            metrics.observe_http(ex, status, done.latency, done.request_bytes, done.upstream, done.outcome)
            if self.has_breaker:
                metrics.observe_queue_wait(done.queue_wait)
        if self.request_log is not None:
            self._log_line(ex, done.latency, done.trace_id)

    def on_probe_done(self, ex: HttpExchange, latency: float) -> None:
        # Probes never reach the metrics (§2.10); they are logged only when asked for.
        if self.request_log is not None and self.log_probes:
            self._log_line(ex, latency)

    def _log_line(self, ex: HttpExchange, latency: float, trace_id: str = "") -> None:
        transport = ex.conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        host = ex.header(b"host") or b""
        length = -1 if ex.chunked_request else ex.content_length or 0  # Go: -1 = unknown length
        line = RequestLogInput(
            method=ex.method.decode("latin-1"),
            request_uri=ex.url.decode("latin-1"),
            proto="HTTP/" + ex.version.decode(),
            host=host.decode("latin-1"),
            remote_addr=remote,
            content_length=length,
            headers=[(name, value) for _l, name, value in ex.headers],
            code=ex.status or 500,
            size=ex.body_bytes,
            latency=latency,
            revision=self.revision,
            trace_id=trace_id,
        )
        try:
            self.out.write(self.request_log.render_bytes(line) if self.request_log else b"")
            self.out.flush()
        except (OSError, ValueError):
            log.warning("writing a request log line failed", exc_info=True)
