"""The websocket stat server on :8080 (CONTRACT.md §4.9; Knative `pkg/autoscaler/statserver`).

Activators (Go's and Sluice's) keep one websocket each and send binary `WireStatMessages` frames.
Each entry with a `stat` goes to a *sink* — normally `local_sink`, which records it into the
collector at its timestamp (stamped with the current second when 0) and pokes the decider. Bad
frames are dropped, counted and logged once per source; the connection stays up, because an
activator whose websocket drops turns unready (§7). Kubelet probes on the same port get 200.

HA forwarding of stats for buckets owned by other replicas (§4.10) belongs to the reconciler
side: it passes `is_bucket_owner` and its own sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from aiohttp import WSMsgType, web

from sluice.wire import DecodeError, Stat, decode_wire_stat_messages

from .collector import MetricCollector
from .dropped import DroppedPayloads
from .scaling import MultiScaler

__all__ = ["CLOSE_RESTARTING", "STAT_SERVER_PORT", "StatServer", "StatSink", "is_kubelet_probe", "local_sink"]

logger = logging.getLogger("autoscaler.statserver")

STAT_SERVER_PORT = 8080
BUCKET_HOST_PREFIX = "autoscaler-bucket"
CLOSE_RESTARTING = 1012  # "service restart": activators reconnect (to the new replica)
SHUTDOWN_BUDGET = 5.0
KEEPALIVE_SECONDS = 180  # TCP keep-alive 3 min, as Go's listener

# A batch of WireStatMessages is ~100 bytes per revision; 8 MiB is ~80,000 revisions. Larger
# frames are dropped (connection kept); beyond 4x that aiohttp closes the connection (1009).
DEFAULT_MAX_PAYLOAD = 8 << 20

StatSink = Callable[[str, Stat, str], None]
"""(key "<ns>/<name>", stat, source) -> None."""


def is_kubelet_probe(request: web.BaseRequest) -> bool:
    """Knative `network.IsKubeletProbe`: kubelet's User-Agent or the K-Kubelet-Probe header."""
    return request.headers.get("User-Agent", "").startswith("kube-probe/") or bool(
        request.headers.get("K-Kubelet-Probe")
    )


def local_sink(collector: MetricCollector, multiscaler: MultiScaler) -> StatSink:
    """Record into the collector at the stat's timestamp, then poke the decider (§4.9)."""

    def sink(key: str, stat: Stat, source: str) -> None:
        if collector.record_wire_stat(key, stat, source):
            multiscaler.poke(key, stat)

    return sink


def _set_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_SECONDS)


class StatServer:
    def __init__(
        self,
        sink: StatSink,
        *,
        dropped: DroppedPayloads | None = None,
        is_bucket_owner: Callable[[str], bool] | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.sink = sink
        self.dropped = dropped if dropped is not None else DroppedPayloads()
        self.is_bucket_owner = is_bucket_owner
        self.max_payload = max_payload
        self.messages_received = 0
        self._clients: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str = "0.0.0.0", port: int = STAT_SERVER_PORT) -> int:
        """Listens; returns the bound port (pass port=0 for an ephemeral one)."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        return self.port

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def shutdown(self, budget: float = SHUTDOWN_BUDGET) -> None:
        """Closes every websocket with 1012 "Restarting" (5 s budget), then stops listening."""
        clients = list(self._clients)
        if clients:
            closes = [
                asyncio.ensure_future(ws.close(code=CLOSE_RESTARTING, message=b"Restarting"))
                for ws in clients
            ]
            _, pending = await asyncio.wait(closes, timeout=budget)
            for task in pending:
                task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if is_kubelet_probe(request):
            return web.Response(status=200)
        host = request.headers.get("Host", "")
        if host.startswith(BUCKET_HOST_PREFIX) and self.is_bucket_owner is not None:
            bucket = host.split(".", 1)[0].split(":", 1)[0]
            if not self.is_bucket_owner(bucket):
                # Not ours: answer without upgrading, so the sender's handshake fails (§4.9).
                return web.Response(status=200)
        ws = web.WebSocketResponse(
            autoping=True, compress=False, max_msg_size=4 * self.max_payload, timeout=SHUTDOWN_BUDGET
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="Bad Request\n")
        await ws.prepare(request)
        _set_keepalive(request.transport.get_extra_info("socket") if request.transport else None)
        source = request.remote or "unknown"
        self._clients.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    self._handle_binary(msg.data, source)
                elif msg.type is WSMsgType.TEXT:
                    self.dropped.drop(source, "text frame")
                elif msg.type is WSMsgType.ERROR:
                    self.dropped.drop(source, "websocket error", repr(ws.exception()))
        finally:
            self._clients.discard(ws)
        return ws

    def _handle_binary(self, data: bytes, source: str) -> None:
        if len(data) > self.max_payload:
            self.dropped.drop(source, "oversized", f"{len(data)} bytes")
            return
        try:
            messages = decode_wire_stat_messages(data)
        except DecodeError as exc:
            self.dropped.drop(source, "corrupt", str(exc))
            return
        for m in messages:
            if m.stat is None:
                continue  # receivers skip entries without a stat (§1.1)
            self.messages_received += 1
            try:
                self.sink(f"{m.namespace}/{m.name}", m.stat, source)
            except Exception:
                logger.exception("stat sink failed for %s/%s", m.namespace, m.name)
