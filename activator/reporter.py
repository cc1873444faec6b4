"""The websocket to the autoscaler (CONTRACT.md §3.8; knative.dev/pkg `websocket/connection.go`).

One durable connection to `ws://autoscaler.<ns>.svc.<domain>:8080/`: 3 s handshake
timeout, reconnect with exponential back-off (100 ms × 1.3, 20 steps, jitter 0.5,
then the sequence starts over — forever), a ping every ~3.3 s and a 10 s read
deadline extended by every frame (pongs included). Frames are binary
`WireStatMessages`. Sends are fire-and-forget: while disconnected they are dropped,
as Go's are; a small bounded buffer covers a slow socket.

`connected` drives the activator's readiness (§1.3, §7): the kubelet probe fails
while the autoscaler is away, but requests keep flowing to known pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from sluice.wire import WireStatMessage, encode_wire_stat_messages

__all__ = ["StatReporter", "backoff_delays"]

log = logging.getLogger("activator.reporter")

HANDSHAKE_TIMEOUT = 3.0
PING_PERIOD = 10.0 / 3  # Go: pongTimeout / 3 ≈ 3.3 s
READ_DEADLINE = 10.0
MAX_PENDING_FRAMES = 64


def backoff_delays(rng: random.Random, base: float = 0.1, factor: float = 1.3, steps: int = 20) -> Iterator[float]:
    """wait.Backoff{Duration 100ms, Factor 1.3, Jitter 0.5, Steps 20}, restarted forever."""
    while True:
        d = base
        for _ in range(steps):
            yield d + rng.random() * 0.5 * d
            d *= factor


class StatReporter:
    def __init__(self, url: str, rng: random.Random | None = None) -> None:
        self.url = url
        self.rng = rng or random.Random()
        self.connected = False
        self.connection_errors = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self._pending: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._ws: Any = None
        self.connected_event = asyncio.Event()

    # ---- StatSender -----------------------------------------------------------------

    def send(self, messages: list[WireStatMessage]) -> None:
        if not messages:
            return
        if not self.connected:
            self.frames_dropped += 1
            return
        if len(self._pending) >= MAX_PENDING_FRAMES:
            self._pending.popleft()
            self.frames_dropped += 1
        self._pending.append(encode_wire_stat_messages(messages))
        self._wake.set()

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stat-reporter")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._set_connected(False)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            state = "connected" if value else "disconnected"
            log.info(f"autoscaler websocket {state}", extra={"fields": {"url": self.url}})
        if value:
            self.connected_event.set()
        else:
            self.connected_event.clear()
            self._pending.clear()

    async def _run(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        delays = backoff_delays(self.rng)
        while True:
            try:
                ws = await asyncio.wait_for(
                    self._session.ws_connect(self.url, autoping=True, autoclose=True, compress=0),
                    HANDSHAKE_TIMEOUT,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connection_errors += 1
                delay = next(delays)
                log.debug(f"connecting to the autoscaler failed: {exc!r}; retrying in {delay:.2f}s")
                await asyncio.sleep(delay)
                continue
            delays = backoff_delays(self.rng)
            self._ws = ws
            self._set_connected(True)
            try:
                await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(f"autoscaler websocket failed: {exc!r}")
            finally:
                self._ws = None
                self._set_connected(False)
                self.connection_errors += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)

    async def _serve(self, ws: Any) -> None:
        """Reads (for pongs and close), pings, and writes frames, until the connection ends."""
        writer = asyncio.get_running_loop().create_task(self._write_loop(ws))
        pinger = asyncio.get_running_loop().create_task(self._ping_loop(ws))
        try:
            import aiohttp

            while True:
                try:
                    # Any frame (pongs are consumed inside receive) resets the deadline.
                    msg = await ws.receive(timeout=READ_DEADLINE)
                except TimeoutError:
                    raise ConnectionError("no frame from the autoscaler within the read deadline") from None
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return
                if msg.type is aiohttp.WSMsgType.ERROR:
                    raise ConnectionError(repr(ws.exception()))
                if writer.done() or pinger.done():
                    return
        finally:
            for task in (writer, pinger):
                task.cancel()
            for task in (writer, pinger):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _ping_loop(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(PING_PERIOD)
            await ws.ping()

    async def _write_loop(self, ws: Any) -> None:
        while True:
            while self._pending:
                frame = self._pending.popleft()
                try:
                    await ws.send_bytes(frame)
                    self.frames_sent += 1
                except Exception:
                    self.frames_dropped += 1
                    raise
            self._wake.clear()
            await self._wake.wait()
