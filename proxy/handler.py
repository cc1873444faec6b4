"""The queue-proxy's main handler (CONTRACT.md §2.4), outermost first:

probe answering and drain tracking (§1.3, §2.11) → in-flight tracking → the
timeout handler (§2.8) → the Forwarded shim (§2.6) → stats and breaker (§2.9,
§2.7) → the reverse proxy to the user container (§2.6).

Every request is a `_Request` driven by callbacks: admission, the breaker grant,
the upstream response and the timers all call into it; nothing awaits on the fast
path, so a request costs no task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from sluice.breaker import Breaker, Ticket
from sluice.http.client import UpstreamPool
from sluice.http.deadlines import DeadlineScanner, RequestTimeouts
from sluice.http.forward import Forwarder, answer_timeout, build_request_head, without_not_sent
from sluice.http.headers import RelayedHead
from sluice.http.server import HttpExchange
from sluice.telemetry.hooks import TRACE_HEADERS, DoneRequest, RequestSpan, RequestTracer, done_request

from .drain import Drainer
from .stats import RequestStats

__all__ = ["WATCHED_HEADERS", "QueueProxy", "Readiness", "RequestObserver", "forwarded_shim"]

log = logging.getLogger("queueproxy")

KUBE_PROBE_UA = b"kube-probe/"
ACTIVATOR_PROBE_UA = b"Knative-Activator-Probe"
AUTOSCALING_PROBE_UA = b"Knative-Autoscaling-Probe"
_HEALTH_UAS = (KUBE_PROBE_UA, ACTIVATOR_PROBE_UA, AUTOSCALING_PROBE_UA)

# Header values the handler reads, collected while parsing (no per-request scan).
WATCHED_HEADERS = frozenset(
    {
        b"user-agent",
        b"k-network-probe",
        b"k-network-hash",
        b"k-kubelet-probe",
        b"k-proxy-request",
        b"k-original-host",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)

# Stripped before forwarding (§2.6); Host is rebuilt from K-Original-Host.
_DROP = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-original-host"})
# With tracing on, the inbound trace headers are replaced by the proxy span's (§2.10).
_DROP_TRACED = _DROP | TRACE_HEADERS

TIMEOUT_BODY = b"request timeout"


class Readiness(Protocol):
    async def check(self) -> bool: ...


class RequestObserver(Protocol):
    """Per-request hooks for metrics and request logs (kept off the proxy's core)."""

    def on_request_done(self, ex: HttpExchange, done: DoneRequest) -> None: ...
    def on_probe_done(self, ex: HttpExchange, latency: float) -> None: ...


def forwarded_shim(xff: bytes, xfp: bytes, xfh: bytes) -> bytes:
    """Go's ForwardedShimHandler: a `Forwarded` value from X-Forwarded-* (§2.6)."""
    nodes = []
    for node in xff.split(b","):
        node = node.strip()
        if b":" in node:
            node = b'"[' + node + b']"'
        nodes.append(node)
    pairs = []
    if xff:
        pairs.append(b"for=" + nodes[0])
    if xfh:
        pairs.append(b"host=" + xfh)
    if xfp:
        pairs.append(b"proto=" + xfp)
    elements = [b";".join(pairs)]
    elements += [b"for=" + node for node in nodes[1:]]
    return b", ".join(elements)


class QueueProxy:
    """Callable handler for the serving port's HttpServer."""

    def __init__(
        self,
        pool: UpstreamPool,
        container_concurrency: int,
        timeout: float,
        response_start_timeout: float,
        idle_timeout: float,
        drainer: Drainer,
        readiness: Readiness | None,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.pool = pool
        cc = container_concurrency
        # cc = 0 means no breaker at all: unlimited, no queue (§2.7). Otherwise Go's
        # queue-proxy breaker: QueueDepth 10·cc, MaxConcurrency cc, InitialCapacity cc.
        self.breaker: Breaker | None = Breaker(10 * cc, cc, cc) if cc > 0 else None
        self.timeouts = RequestTimeouts(timeout, response_start_timeout, idle_timeout)
        self.drainer = drainer
        self.readiness = readiness
        self.observer = observer
        # Spans kn.queueproxy.proxy / kn.queueproxy.wait (§2.10); None = tracing off, one check.
        self.tracer = tracer
        self.clock = clock
        self.stats = RequestStats(clock())
        self.deadlines = DeadlineScanner(clock)
        self.in_flight = 0  # every accepted non-probe request, hijacked ones included
        self.probe_tasks: set[asyncio.Task[None]] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []

    # ---- entry --------------------------------------------------------------

    def __call__(self, ex: HttpExchange) -> None:
        watched = ex.watched
        ua = watched.get(b"user-agent", b"")
        network_probe = watched.get(b"k-network-probe")
        if ua.startswith(_HEALTH_UAS):
            self._health_check(ex, network_probe)
            self._probe_answered(ex)
            return
        if network_probe == b"probe":
            self._network_probe(ex)
            self._probe_answered(ex)
            return
        self.drainer.touch()
        _Request(self, ex).begin()

    # ---- probes (§1.3) ------------------------------------------------------

    def _health_check(self, ex: HttpExchange, network_probe: bytes | None) -> None:
        if self.drainer.draining:
            ex.respond_error(503, "shutting down")
            return
        if network_probe != b"queue":
            value = (network_probe or b"").decode("latin-1")
            ex.respond_error(400, f"unexpected probe header value: {value}")
            return
        if self.readiness is None:
            ex.respond_text(200, b"queue")
            return
        task = asyncio.get_running_loop().create_task(self._answer_readiness(ex, self.readiness))
        self.probe_tasks.add(task)
        task.add_done_callback(self.probe_tasks.discard)

    async def _answer_readiness(self, ex: HttpExchange, readiness: Readiness) -> None:
        try:
            ready = await readiness.check()
        except Exception:
            log.exception("readiness check failed")
            ready = False
        if ex.aborted:
            return
        if self.drainer.draining:
            ex.respond_error(503, "shutting down")
        elif ready:
            ex.respond_text(200, b"queue")
        else:
            ex.respond_text(503, b"")
        self._probe_answered(ex)

    def _probe_answered(self, ex: HttpExchange) -> None:
        observer = self.observer
        if observer is not None and ex.response_done:
            observer.on_probe_done(ex, self.clock() - ex.start_time)

    def _network_probe(self, ex: HttpExchange) -> None:
        if self.drainer.draining:
            ex.respond_error(503, "shutting down")
            return
        digest = ex.watched.get(b"k-network-hash")
        if not digest:
            ex.respond_error(400, 'a probe request must contain a non-empty "K-Network-Hash" header')
            return
        ex.respond_text(200, b"", extra=((b"K-Network-Hash", digest),))

    # ---- in-flight accounting (shutdown waits on it) ------------------------

    def _request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in flight (websockets included); False on timeout."""
        if self.in_flight == 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return self.in_flight == 0
        return True

    # ---- the drain's deadline (§2.11) --------------------------------------------

    def end_long_lived(self) -> int:
        """Ends every request still open (websockets, event streams) as cleanly as its
        protocol allows: Close frames 1001 to both ends of a websocket, the last chunk of a
        streamed response (see Forwarder.end_long_lived). Returns how many. Requests are
        found through the deadline scan, which holds each one while a revision timeout is
        set (always, in Knative)."""
        ended = 0
        for item in list(self.deadlines.active):
            if isinstance(item, _Request) and not item.done:
                item.end_long_lived(TIMEOUT_BODY)
                item.finished()
                ended += 1
        return ended

    def report(self) -> tuple[float, float, float, float]:
        r = self.stats.report(self.clock())
        return (
            r.average_concurrency,
            r.average_proxied_concurrency,
            r.request_count,
            r.proxied_request_count,
        )


class _Request(Forwarder):
    """One proxied request through the timeout handler, breaker and reverse proxy."""

    __slots__ = (
        "counted",
        "done",
        "granted_at",
        "head_at",
        "proxied",
        "qp",
        "request_bytes",
        "span",
        "start",
        "ticket",
        "timed_out",
    )

    def __init__(self, qp: QueueProxy, ex: HttpExchange) -> None:
        Forwarder.__init__(self, ex)
        self.qp = qp
        self.proxied = ex.watched.get(b"k-proxy-request") == b"activator"
        self.ticket: Ticket | None = None
        self.done = False
        self.timed_out = False
        self.counted = False
        self.start = 0.0
        self.granted_at = 0.0
        # For the observer (metrics): request body bytes read, and when the app's head came.
        self.request_bytes = 0
        self.head_at = 0.0
        self.span: RequestSpan | None = None

    def begin(self) -> None:
        qp = self.qp
        ex = self.ex
        qp.in_flight += 1
        now = qp.clock()
        self.start = now
        tracer = qp.tracer
        if tracer is not None:
            self.span = tracer.start(ex)
        # A client-cancelled request writes nothing (§2.6); it frees its slot now.
        ex.on_abort = self.cancel
        if qp.timeouts.armed:
            qp.deadlines.add(self)
        # Kubelet-like requests that get this far skip stats and the breaker (§2.6).
        if b"k-kubelet-probe" in ex.watched:
            self.granted_at = now
            self._forward()
            return
        qp.stats.request_in(now, self.proxied)
        self.counted = True
        breaker = qp.breaker
        if breaker is None:
            self.granted_at = now
            self._forward()
            return
        ticket = breaker.reserve(self._granted)
        if ticket is None:
            self.ex.respond_error(503, "pending request queue full")
            self.finished()
            return
        self.ticket = ticket
        if ticket.granted:
            self.granted_at = now
            self._forward()

    def _granted(self) -> None:
        if self.done:
            return
        self.granted_at = self.qp.clock()
        try:
            self._forward()
        except Exception:
            log.exception("forwarding a queued request failed")
            self.ex.respond_error(500, "internal error")
            self.finished()

    def _forward(self) -> None:
        ex = self.ex
        watched = ex.watched
        if (
            b"x-forwarded-for" not in watched
            and b"x-forwarded-proto" not in watched
            and b"x-forwarded-host" not in watched
        ):
            # The common case: X-Forwarded-For is just the client, no shim needed.
            extra = ex.conn.xff_line
        else:
            extra = self._forwarded_headers()
        span = self.span
        if span is not None:
            if self.qp.breaker is not None:
                span.wait_done()
            # The user container gets the proxy span's context, so its spans hang under it.
            extra += span.propagation
            self.forward(self.qp.pool, build_request_head(ex, watched.get(b"k-original-host"), _DROP_TRACED, extra))
            return
        self.forward(self.qp.pool, build_request_head(ex, watched.get(b"k-original-host"), _DROP, extra))

    def _forwarded_headers(self) -> bytes:
        """X-Forwarded-For with the client appended (Go's reverse proxy), and the
        `Forwarded` shim when the request had X-Forwarded-* but no Forwarded (§2.6)."""
        ex = self.ex
        watched = ex.watched
        extra = []
        xff = watched.get(b"x-forwarded-for")
        if b"forwarded" not in watched:
            # Go reads the first X-Forwarded-For line here (Header.Get).
            first_xff = ex.header(b"x-forwarded-for") or b""
            xfp = watched.get(b"x-forwarded-proto", b"")
            xfh = watched.get(b"x-forwarded-host", b"")
            extra.append(b"Forwarded: " + forwarded_shim(first_xff, xfp, xfh) + b"\r\n")
        client = ex.client_ip
        if client:
            xff = xff + b", " + client if xff else client
        if xff:
            extra.append(b"X-Forwarded-For: " + xff + b"\r\n")
        return b"".join(extra)

    # ---- timeouts (§2.8) ----------------------------------------------------

    # ---- the app's 502s never carry the not-sent mark (see without_not_sent) ----------------

    def on_response_head(self, status: int, reason: bytes, head: RelayedHead) -> None:
        if self.qp.observer is not None:
            self.head_at = self.qp.clock()
        Forwarder.on_response_head(self, status, reason, without_not_sent(head) if status == 502 else head)

    def on_response(self, status: int, reason: bytes, head: RelayedHead, body: bytes) -> None:
        if self.qp.observer is not None:
            self.head_at = self.qp.clock()
        Forwarder.on_response(self, status, reason, without_not_sent(head) if status == 502 else head, body)

    def on_request_body(self, data: bytes) -> None:
        self.request_bytes += len(data)
        Forwarder.on_request_body(self, data)

    def on_tick(self, now: float) -> None:
        """Called by the shared DeadlineScanner while this request is active (§2.8)."""
        if not self.done and self.qp.timeouts.expired(self.ex, self.start, now):
            self._timeout()

    def _timeout(self) -> None:
        self.timed_out = True
        answer_timeout(self.ex, self, TIMEOUT_BODY)
        self.finished()

    # ---- completion ---------------------------------------------------------

    def finished(self) -> None:
        if self.done:
            return
        self.done = True
        qp = self.qp
        qp.deadlines.discard(self)
        now = qp.clock()
        if self.counted:
            qp.stats.request_out(now, self.proxied)
        if self.ticket is not None and qp.breaker is not None:
            qp.breaker.release(self.ticket)
        self.ex.on_abort = None
        qp._request_finished()
        span = self.span
        trace_id = ""
        if span is not None:
            span.end(self.ex.status or 500)
            trace_id = span.trace_id
        if qp.observer is not None:
            done = done_request(
                self.start, self.granted_at, self.head_at, now, self.ex.status, self.upstream_error, self.sent,
                trace_id, self.request_bytes,
            )  # fmt: skip
            qp.observer.on_request_done(self.ex, done)
