"""The activator's request handler (CONTRACT.md §3.2 chain), outermost first:

kubelet health → network probe (`probe`) → activator probe (`activator`) → revision
lookup (§3.3) → concurrency reporter (§3.8) → timeout handler (§3.6) → throttler
(§3.5) → reverse proxy to the queue-proxy (§3.7).

As in the queue-proxy, a request is a `_Request` driven by callbacks (throttler
grant, upstream response, the shared deadline tick): no task, timer or future per
request on the fast path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from sluice.http.deadlines import DeadlineScanner
from sluice.http.forward import Forwarder, answer_timeout, build_request_head
from sluice.http.headers import RelayedHead
from sluice.http.server import HttpExchange
from sluice.telemetry.hooks import TRACE_HEADERS, DoneRequest, RequestSpan, RequestTracer, done_request
from sluice.wire import WireStatMessage

from .revision import RevKey, identify, not_found_message
from .revisions import RevisionEntry, Revisions
from .stats import ConcurrencyReporter, RevisionStats
from .throttler import PodTracker, Waiter

__all__ = ["WATCHED_HEADERS", "ActivatorHandler", "Health", "StatSender", "go_html_escape"]

log = logging.getLogger("activator")

WATCHED_HEADERS = frozenset(
    {
        b"host",
        b"user-agent",
        b"k-kubelet-probe",
        b"k-network-probe",
        b"k-network-hash",
        b"knative-serving-revision",
        b"knative-serving-namespace",
        b"k-original-host",
        b"x-forwarded-for",
    }
)

# §3.7: the revision headers go; K-Network-Hash is deleted from non-probe requests
# (§1.3); K-Proxy-Request is *set* (replacing any inbound value), so it is dropped
# here and re-added.
_DROP = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-network-hash", b"k-proxy-request"})
_DROP_TRACED = _DROP | TRACE_HEADERS  # tracing on: the activator_proxy span's context goes on
_PROXY_HEADER = b"K-Proxy-Request: activator\r\n"

TIMEOUT_BODY = b"activator request timeout"

# Attempts per request when a pod fails before the request reached it (see `retry_elsewhere`):
# each failed pod is quarantined first, so this bounds only a run of pods failing together.
MAX_ATTEMPTS = 3


class Health(Protocol):
    def error(self) -> str | None:
        """None when the activator should receive traffic (§1.3 kubelet probe)."""
        ...


class StatSender(Protocol):
    def send(self, messages: list[WireStatMessage]) -> None: ...


class RequestObserver(Protocol):
    """Per-request metrics (activator/telemetry.py); None when metrics are off (§3.10)."""

    def on_wait_done(self, entry: RevisionEntry, seconds: float) -> None: ...
    def on_cold_start(self, entry: RevisionEntry, seconds: float) -> None: ...
    def on_request_done(self, entry: RevisionEntry, ex: HttpExchange, dest: str, done: DoneRequest) -> None: ...


class Backends(Protocol):
    def kick(self, key: RevKey) -> None: ...
    def quarantine(self, key: RevKey, dest: str) -> None: ...


def go_html_escape(value: str) -> str:
    """Go's html.EscapeString (five characters, Go's entity spellings)."""
    return (
        value.replace("&", "&amp;")
        .replace("'", "&#39;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
    )


class ActivatorHandler:
    """Callable handler for the 8012/8013 HttpServers."""

    def __init__(
        self,
        revisions: Revisions,
        reporter: ConcurrencyReporter,
        sender: StatSender,
        health: Health,
        backends: Backends,
        cluster_domain: str,
        pod_addressability: bool = False,
        clock: Callable[[], float] = time.monotonic,
        observer: RequestObserver | None = None,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.revisions = revisions
        self.reporter = reporter
        self.sender = sender
        self.health = health
        self.backends = backends
        self.domain = cluster_domain.encode()
        self.pod_addressability = pod_addressability
        self.clock = clock
        # Telemetry hooks: None when off, one attribute check per request (§3.10).
        self.observer = observer
        self.tracer = tracer
        self.deadlines = DeadlineScanner(clock)
        self.in_flight = 0
        self.requests = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    def __call__(self, ex: HttpExchange) -> None:
        watched = ex.watched
        if watched.get(b"user-agent", b"").startswith(b"kube-probe/") or watched.get(b"k-kubelet-probe"):
            problem = self.health.error()
            if problem is None:
                ex.respond_text(200, b"")
            else:
                ex.respond_error(500, problem)
            return
        network_probe = watched.get(b"k-network-probe")
        if network_probe:
            self._probe(ex, network_probe)
            return
        revision = watched.get(b"knative-serving-revision")
        namespace = watched.get(b"knative-serving-namespace")
        entry = self.revisions.by_header.get((namespace, revision)) if revision and namespace else None
        if entry is None:
            key = identify(revision, namespace, watched.get(b"host"), self.domain)
            entry = self.revisions.get(key) if key is not None else None
            if entry is None:
                ex.respond_error(404, not_found_message(key[1] if key is not None else ""))
                return
        self.requests += 1
        _Request(self, ex, entry).begin()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no request is in flight (tunnels included); False on timeout."""
        if self.in_flight == 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return self.in_flight == 0
        return True

    def _probe(self, ex: HttpExchange, value: bytes) -> None:
        if value == b"probe":
            digest = ex.watched.get(b"k-network-hash")
            if not digest:
                ex.respond_error(400, 'a probe request must contain a non-empty "K-Network-Hash" header')
            else:
                ex.respond_text(200, b"", extra=((b"K-Network-Hash", digest),))
        elif value == b"activator":
            ex.respond_text(200, b"activator")
        else:
            text = go_html_escape(value.decode("latin-1"))
            ex.respond_error(400, f'unexpected probe header value: "{text}"')


class _Request(Forwarder):
    """One request through the reporter, timeout handler, throttler and proxy."""

    __slots__ = (
        "act",
        "attempts",
        "cold",
        "done",
        "entry",
        "granted_at",
        "head_at",
        "request_bytes",
        "span",
        "start",
        "stats",
        "tracker",
        "waiter",
    )

    def __init__(self, act: ActivatorHandler, ex: HttpExchange, entry: RevisionEntry) -> None:
        Forwarder.__init__(self, ex)
        self.act = act
        self.entry = entry
        self.waiter: Waiter | None = None
        self.tracker: PodTracker | None = None
        self.stats: RevisionStats | None = None
        self.done = False
        self.start = 0.0
        self.attempts = 1
        self.span: RequestSpan | None = None
        self.cold = False  # arrived with no ready pod, and metrics are on: a cold start to time
        # For the observer (metrics): when a pod was granted, when its head came, body bytes read.
        self.granted_at = 0.0
        self.head_at = 0.0
        self.request_bytes = 0

    def begin(self) -> None:
        act = self.act
        entry = self.entry
        act.in_flight += 1
        now = act.clock()
        self.start = now
        if act.tracer is not None:
            self.span = act.tracer.start(self.ex, entry.span_attributes)
        stats = act.reporter.stats.get(entry.key)
        if stats is None:
            stats, first = act.reporter.request_in(entry.key, now)
            if first is not None:
                # The immediate scale-from-zero report (§3.8).
                act.sender.send([first])
        else:
            stats.request_in(now)
        self.stats = stats
        self.ex.on_abort = self.cancel  # the client went away: drop the relay, free the slot
        if entry.timeouts.armed:
            act.deadlines.add(self)
        throttler = entry.throttler
        if act.observer is not None:
            self.cold = throttler.backends == 0
        waiter = throttler.acquire(self)
        if waiter is None:
            self.ex.respond_error(503, "pending request queue full")
            self.finished()
            return
        self._admitted(waiter)

    def _admitted(self, waiter: Waiter) -> None:
        self.waiter = waiter
        if waiter.granted:
            assert waiter.tracker is not None
            self._forward(waiter.tracker)
        elif self.entry.throttler.capacity == 0:
            # Held for a pod (§3.6): make the backend watcher look now, not at its next tick.
            self.act.backends.kick(self.entry.key)

    # ---- throttler ------------------------------------------------------------------

    def on_acquired(self, tracker: PodTracker) -> None:
        if self.done:
            return
        try:
            self._forward(tracker)
        except Exception:
            log.exception("forwarding a held request failed")
            self.ex.respond_error(500, "internal error")
            self.finished()

    def revision_gone(self) -> None:
        """The Revision was deleted while this request waited: §3.6 "anything else" → 500."""
        if not self.done:
            self.ex.respond_text(500, b"")
            self.finished()

    def _forward(self, tracker: PodTracker) -> None:
        self.tracker = tracker
        if tracker.removed and self.retry_elsewhere():
            return  # the pod was marked gone between the grant and now: another one
        ex = self.ex
        watched = ex.watched
        act = self.act
        if act.observer is not None:
            self.granted_at = act.clock()
            act.observer.on_wait_done(self.entry, self.granted_at - self.start)
        drop = _DROP
        extra = _PROXY_HEADER
        span = self.span
        if span is not None:
            span.wait_done()  # throttler_try (§3.10)
            extra += span.propagation
            drop = _DROP_TRACED
        if b"k-original-host" not in watched:
            host = watched.get(b"host")
            if host:
                extra += b"K-Original-Host: " + host + b"\r\n"
        xff = watched.get(b"x-forwarded-for")
        if xff is None:
            extra += ex.conn.xff_line  # the common case, built once per connection
        else:
            # Go's reverse proxy appends the client to X-Forwarded-For (§3.7).
            client = ex.client_ip
            extra += b"X-Forwarded-For: " + (xff + b", " + client if client else xff) + b"\r\n"
        if act.pod_addressability:
            target = self.entry.private_host
            extra += b"K-Passthrough-Lb: true\r\n"
        else:
            target = tracker.target
        pool = tracker.pool
        if pool is None or pool.closing:
            pool = self.entry.pool_for(tracker.dest)
        self.forward(pool, build_request_head(ex, target, drop, extra))

    # ---- the first byte from a pod ends a cold start ---------------------------------------

    def on_response_head(self, status: int, reason: bytes, head: RelayedHead) -> None:
        if self.act.observer is not None:
            self._head_seen()
        Forwarder.on_response_head(self, status, reason, head)

    def on_response(self, status: int, reason: bytes, head: RelayedHead, body: bytes) -> None:
        if self.act.observer is not None:
            self._head_seen()
        Forwarder.on_response(self, status, reason, head, body)

    def on_request_body(self, data: bytes) -> None:
        self.request_bytes += len(data)
        Forwarder.on_request_body(self, data)

    def _head_seen(self) -> None:
        act = self.act
        self.head_at = act.clock()
        if self.cold and act.observer is not None:
            self.cold = False
            act.observer.on_cold_start(self.entry, self.head_at - self.start)

    # ---- a pod that never got the request (Sluice addition to §3.6) --------------------

    def retry_elsewhere(self) -> bool:
        """The pod never got this request (our dial to its queue-proxy failed, or the
        queue-proxy's dial to the app did: its 502 says so): the pod leaves the rotation
        until a probe finds it healthy again, its slot is released, and the request goes
        back through the throttler to another pod, still under its own timeouts (the
        deadline scan keeps running). Knative has no HTTP retries (§3.6) and answers 502;
        users see those on scale-down and crashes (knative/serving#11596, #15211). Only
        while another ready pod is assigned to this activator."""
        if self.done or self.attempts >= MAX_ATTEMPTS:
            return False
        tracker = self.tracker
        waiter = self.waiter
        if tracker is None or waiter is None:
            return False
        throttler = self.entry.throttler
        # Quarantine first, so the release below cannot hand the same pod to a waiter.
        self.act.backends.quarantine(self.entry.key, tracker.dest)
        if not throttler.assigned and throttler.cluster_ip is None:
            # No other ready pod: answer now (a misconfigured pod set must not turn every
            # 502 into a wait for the revision timeout).
            return False
        self.attempts += 1
        self.tracker = None
        self.waiter = None
        throttler.release(waiter)
        again = throttler.acquire(self)
        if again is None:
            return False  # the queue is full: the 502 goes out
        self._admitted(again)
        return True

    def backend_failed(self) -> None:
        tracker = self.tracker
        if tracker is not None:
            self.act.backends.quarantine(self.entry.key, tracker.dest)

    # ---- timeouts (§3.6 → §2.8) --------------------------------------------------------

    def on_tick(self, now: float) -> None:
        if not self.done and self.entry.timeouts.expired(self.ex, self.start, now):
            self._timeout()

    def _timeout(self) -> None:
        answer_timeout(self.ex, self, TIMEOUT_BODY)
        self.finished()

    # ---- completion ---------------------------------------------------------------------

    def finished(self) -> None:
        if self.done:
            return
        self.done = True
        if self.upstream_error is not None and self.tracker is not None:
            # The pod's connection failed: this request got its 502 (§3.6); the pod
            # leaves the rotation now rather than at the next Endpoints change.
            self.act.backends.quarantine(self.entry.key, self.tracker.dest)
        act = self.act
        entry = self.entry
        act.deadlines.discard(self)
        waiter = self.waiter
        if waiter is not None:
            entry.throttler.release(waiter)
        now = act.clock()
        if self.stats is not None:
            self.stats.request_out(now)
        self.ex.on_abort = None
        act.request_finished()
        status = self.ex.status or 500
        if self.span is not None:
            self.span.end(status)
        if act.observer is not None:
            tracker = self.tracker
            dest = tracker.dest if tracker is not None else ""
            done = done_request(
                self.start, self.granted_at, self.head_at, now, self.ex.status, self.upstream_error, self.sent,
                "", self.request_bytes,
            )  # fmt: skip
            act.observer.on_request_done(entry, self.ex, dest, done)
