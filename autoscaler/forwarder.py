"""Stat forwarding between replicas (CONTRACT.md §4.9, §4.10; Knative `pkg/autoscaler/statforwarder`).

Activators connect to whichever replica the `autoscaler` Service picks. A stat for a key whose
bucket another replica leads is sent on, over one websocket per bucket, to
`ws://<holder IP>:8080` (the IP from the lease holder `<POD_NAME>_<POD_IP>`), falling back to
`ws://<bucket>.<system-ns>.svc.<cluster-domain>:8080` (whose Service/EndpointSlice the owner
keeps), 500 ms to establish. When the owner is unknown or sending fails the stat waits and is
retried every 500 ms, as in Go; unlike Go the wait is bounded (1000 stats per bucket, the Go
channel's capacity) and overflow is counted, so a partition cannot grow memory without limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

import aiohttp

from sluice.wire import Stat, WireStatMessage, encode_wire_stat_messages

from .bucket import BucketSet
from .leaderelection import holder_ip

__all__ = ["StatForwarder"]

logger = logging.getLogger("autoscaler.forwarder")

RETRY_INTERVAL = 0.5
ESTABLISH_TIMEOUT = 0.5
MAX_PENDING = 1000

LocalSink = Callable[[str, Stat, str], None]


class _Bucket:
    __slots__ = ("pending", "task", "wakeup", "ws")

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[str, Stat, str]] = collections.deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None


class StatForwarder:
    def __init__(
        self,
        buckets: Callable[[], BucketSet | None],
        holder: Callable[[str], str],
        *,
        local: LocalSink,
        port: int = 8080,
        system_namespace: str = "knative-serving",
        cluster_domain: str = "cluster.local",
        owns: Callable[[str], bool] = lambda bucket: False,
    ) -> None:
        self._buckets = buckets
        self._holder = holder
        self._local = local
        self.port = port
        self.system_namespace = system_namespace
        self.cluster_domain = cluster_domain
        self._owns = owns
        self._state: dict[str, _Bucket] = {}
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0
        self.dropped = 0
        self._closed = False

    def forward(self, key: str, stat: Stat, source: str) -> None:
        bs = self._buckets()
        if bs is None or self._closed:
            return
        bucket = bs.owner(key)
        state = self._state.get(bucket)
        if state is None:
            state = self._state[bucket] = _Bucket()
        if len(state.pending) >= MAX_PENDING:
            state.pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("stat forwarding to bucket %s is backed up; %d stats dropped", bucket, self.dropped)
        state.pending.append((key, stat, source))
        state.wakeup.set()
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._run(bucket, state), name=f"forward {bucket}")

    def _targets(self, bucket: str) -> list[str]:
        out: list[str] = []
        ip = holder_ip(self._holder(bucket))
        if ip:
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"ws://{host}:{self.port}")
        out.append(f"ws://{bucket}.{self.system_namespace}.svc.{self.cluster_domain}:{self.port}")
        return out

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _connect(self, bucket: str) -> aiohttp.ClientWebSocketResponse | None:
        for url in self._targets(bucket):
            try:
                return await asyncio.wait_for(self._sess().ws_connect(url, autoping=True), ESTABLISH_TIMEOUT)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                continue
        return None

    async def _run(self, bucket: str, state: _Bucket) -> None:
        failures = 0
        while not self._closed:
            if not state.pending:
                state.wakeup.clear()
                try:
                    await asyncio.wait_for(state.wakeup.wait(), 30.0)
                except TimeoutError:
                    break  # idle: let the connection go
                continue
            if state.ws is None or state.ws.closed:
                state.ws = await self._connect(bucket)
                if state.ws is None:
                    failures += 1
                    if failures == 1 or failures % 30 == 0:
                        logger.warning(
                            "cannot forward stats to the owner of bucket %s (%d attempts), retrying",
                            bucket,
                            failures,
                        )
                    await asyncio.sleep(RETRY_INTERVAL)
                    continue
            if self._owns(bucket):
                # Promoted meanwhile: what was waiting is ours to record.
                while state.pending:
                    self._local(*state.pending.popleft())
                continue
            batch = list(state.pending)
            state.pending.clear()
            msgs = []
            for key, stat, _ in batch:
                ns, _, name = key.partition("/")
                msgs.append(WireStatMessage(ns, name, stat))
            try:
                await state.ws.send_bytes(encode_wire_stat_messages(msgs))
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                with contextlib.suppress(Exception):
                    await state.ws.close()
                state.ws = None
                # Put the batch back in front of anything newer, within the bound.
                state.pending.extendleft(reversed(batch[-(MAX_PENDING - len(state.pending)) :]))
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            self.forwarded += len(batch)
            failures = 0
        if state.ws is not None:
            with contextlib.suppress(Exception):
                await state.ws.close()
            state.ws = None

    async def close(self) -> None:
        self._closed = True
        tasks = [s.task for s in self._state.values() if s.task is not None]
        for s in self._state.values():
            s.wakeup.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for s in self._state.values():
            if s.ws is not None:
                with contextlib.suppress(Exception):
                    await s.ws.close()
        self._state.clear()
        if self._session is not None:
            await self._session.close()
