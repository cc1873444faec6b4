"""Real processes stopped with SIGSTOP and resumed with SIGCONT (issue 13): the periodic work of
each component moves again afterwards. Before the fix a 2.5 s stall froze the queue-proxy's Stat
and the activator's reports for the life of the process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from sluice.wire import Stat, decode_stat
from tests.activator.conftest import Autoscaler, Kube, activator_env, eventually
from tests.activator.conftest import autoscaler as autoscaler
from tests.activator.conftest import kube as kube
from tests.support import ROOT, QueueProxySubprocess, free_port, get, http_request, raw_upstream

STALL = 2.5


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def _stat(port: int) -> Stat:
    return decode_stat((await http_request(port, get("/metrics"))).body)


def _stall(pid: int, seconds: float = STALL) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_queue_proxy_stat_moves_again_after_a_stall() -> None:
    async with raw_upstream(_ok) as user_port:
        qp = QueueProxySubprocess(user_port).start()
        try:
            assert qp.proc is not None
            await asyncio.sleep(1.3)
            before = await _stat(qp.metrics_port)
            await asyncio.to_thread(_stall, qp.proc.pid)
            # Requests after the stall are counted by the next ticks.
            for _ in range(5):
                assert (await http_request(qp.port, get("/"))).status == 200
            ticks: dict[float, Stat] = {}  # every distinct tick seen over 2.5 s, by its uptime
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                stat = await _stat(qp.metrics_port)
                ticks[stat.process_uptime] = stat
                await asyncio.sleep(0.15)
            uptimes = sorted(ticks)
            assert len(uptimes) >= 2, "the Stat is frozen"  # still ticking, not a one-off
            assert uptimes[-1] >= before.process_uptime + STALL + 1.5, (before, uptimes)
            assert sum(s.request_count for s in ticks.values()) == 5
        finally:
            _code, err = qp.stop()
        assert "AttributeError" not in err, err[-2000:]
        assert "tick(s) dropped" in err


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("activator exited")
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("activator did not listen")


async def test_activator_reports_move_again_after_a_stall(kube: Kube, autoscaler: Autoscaler) -> None:
    await kube.create_revision("hello-00001", cc=0)
    port = free_port()
    env = dict(os.environ)
    env.update(
        activator_env(kube, autoscaler.url, SLUICE_HTTP1_PORT=str(port), SLUICE_H2C_PORT=str(free_port()))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "activator"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    key = "default/hello-00001"
    routed = {"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": "default"}
    try:
        await asyncio.to_thread(_wait_port, port, proc)
        await eventually(lambda: autoscaler.server.client_count == 1, timeout=10)
        # A held request (no ready pod) keeps the revision in every periodic report (§3.8).
        held = asyncio.create_task(http_request(port, get("/", routed), timeout=30))
        await eventually(lambda: len(autoscaler.received.for_key(key)) >= 2, timeout=10)
        await asyncio.to_thread(_stall, proc.pid)
        resumed = time.monotonic()
        await asyncio.sleep(3.5)
        after = [t for t, k, _ in autoscaler.received.stats if k == key and t > resumed + 0.5]
        assert len(after) >= 2, "the activator stopped reporting after the stall"
        held.cancel()
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
    assert b"AttributeError" not in err, err.decode()[-2000:]
