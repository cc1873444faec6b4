"""The websocket stat server (CONTRACT.md §4.9) over real sockets, with a real websocket client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from autoscaler.collector import MetricCollector
from autoscaler.resources import MetricSpec
from autoscaler.scaling import MultiScaler
from autoscaler.statserver import StatServer, local_sink
from sluice.wire import Stat, WireStatMessage, encode_wire_stat_messages

NOW = 1_700_000_000.4


class Env:
    def __init__(self) -> None:
        self.clock = lambda: NOW
        self.collector = MetricCollector(self.clock)
        self.multiscaler = MultiScaler(self.collector, lambda ns, name: 0, self.clock)
        self.server = StatServer(
            local_sink(self.collector, self.multiscaler),
            dropped=self.collector.dropped,
            is_bucket_owner=lambda bucket: bucket == "autoscaler-bucket-00-of-02",
            max_payload=4096,
        )
        self.url = ""


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    port = await e.server.start("127.0.0.1", 0)
    e.url = f"http://127.0.0.1:{port}/"
    e.collector.create_or_update("ns", "a", MetricSpec(60.0, 6.0, "a-private"))
    e.collector.create_or_update("ns", "b", MetricSpec(60.0, 6.0, "b-private"))
    yield e
    await e.server.shutdown(budget=1.0)
    await e.collector.close()


async def _until(predicate: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _batch(*entries: tuple[str, float]) -> bytes:
    return encode_wire_stat_messages(
        [
            WireStatMessage("ns", name, Stat(pod_name="activator-0", average_concurrent_requests=c, request_count=c))
            for name, c in entries
        ]
    )


async def test_binary_batches_are_recorded_at_their_second(env: Env) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(env.url) as ws:
        await ws.send_bytes(_batch(("a", 3.0), ("b", 5.0)))
        await ws.send_bytes(encode_wire_stat_messages([WireStatMessage("ns", "a", None)]))  # skipped
        await ws.send_bytes(_batch(("a", 1.0), ("unknown", 9.0)))
        await _until(lambda: env.server.messages_received == 4)
    # timestamp 0 -> stamped with the current second; both "a" stats in that second: 3 + 1
    assert env.collector.stable_and_panic_concurrency("ns/a", NOW) == (4.0, 4.0)
    assert env.collector.stable_and_panic_rps("ns/b", NOW) == (5.0, 5.0)


async def test_bad_frames_are_dropped_counted_and_not_fatal(env: Env) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(env.url) as ws:
        await ws.send_bytes(b"\x0a\x05\x0a")  # truncated
        await ws.send_bytes(b"\x0a" + bytes([0x80, 0x40]) + b"x" * 8200)  # 8 KiB > max_payload 4096
        await ws.send_str("hello")
        await ws.send_bytes(_batch(("a", 2.0)))  # the connection still works
        await _until(lambda: env.server.messages_received == 1)
        assert not ws.closed
    assert env.collector.dropped.counts == {"corrupt": 1, "oversized": 1, "text frame": 1}
    assert env.collector.stable_and_panic_concurrency("ns/a", NOW) == (2.0, 2.0)


async def test_probe_plain_get_and_foreign_bucket(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(env.url + "healthz", headers={"User-Agent": "kube-probe/1.30"}) as r:
            assert r.status == 200
        async with s.get(env.url, headers={"K-Kubelet-Probe": "queue"}) as r:
            assert r.status == 200
        async with s.get(env.url) as r:  # not a websocket handshake
            assert r.status == 400
        # Another replica's bucket: plain 200, no upgrade -> the client's handshake fails.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await s.ws_connect(env.url, headers={"Host": "autoscaler-bucket-01-of-02.knative-serving.svc"})
        async with s.ws_connect(env.url, headers={"Host": "autoscaler-bucket-00-of-02.knative-serving"}) as ws:
            await ws.ping()
            await ws.send_bytes(_batch(("b", 1.0)))
            await _until(lambda: env.server.messages_received == 1)


async def test_poke_scales_from_zero_at_once(env: Env) -> None:
    from tests.autoscaler.test_scaling import BASE

    d = env.multiscaler.create("ns", "a", BASE)
    assert d.status.desired_scale == -1
    env.collector.record("ns/a", NOW, Stat())
    env.multiscaler.tick("ns/a", NOW)  # desired 0
    async with aiohttp.ClientSession() as s, s.ws_connect(env.url) as ws:
        await ws.send_bytes(_batch(("a", 1.0)))
        # poked: ceil(1 / 10) = 1 pod without waiting for the 2 s tick
        await _until(lambda: env.multiscaler.get("ns", "a").status.desired_scale == 1)  # type: ignore[union-attr]


async def test_shutdown_closes_with_1012(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(env.url)
        await _until(lambda: env.server.client_count == 1)
        shutdown = asyncio.ensure_future(env.server.shutdown(budget=2.0))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (1012, "Restarting")
        await ws.close()
        await shutdown
