"""End-of-iteration send coalescing (sluice/http/outbox.py): the mode switches, and
that bytes stay whole and in order through a real queue-proxy in coalescing mode."""

from __future__ import annotations

import asyncio
import json

from sluice.http.outbox import Outbox, outbox
from tests.proxy.conftest import MakeQP
from tests.support import RawConnection, get, raw_upstream, read_request_head


class _Conn:
    def __init__(self, box: Outbox, log: list[str], name: str) -> None:
        self.box = box
        self.log = log
        self.name = name
        self.queued = False

    def write(self) -> None:
        """What ServerConnection.write does with the outbox, minus the bytes."""
        if self.queued:
            return
        if self.box.direct():
            self.log.append(f"{self.name}:direct")
            return
        self.queued = True
        self.box.pending.append(self)

    def flush_out(self) -> None:
        self.queued = False
        self.log.append(f"{self.name}:flushed")


async def _iteration() -> None:
    await asyncio.sleep(0)  # one loop iteration: the test's writes are its I/O callbacks


async def test_direct_until_a_probe_sees_a_busy_iteration_then_back_when_quiet() -> None:
    box = Outbox(asyncio.get_running_loop())
    log: list[str] = []
    conns = [_Conn(box, log, f"c{i}") for i in range(4)]
    for _ in range(200):  # one writer per iteration (c=1): the probes find nothing else
        conns[0].write()
        await _iteration()
    assert not box.coalescing and set(log) == {"c0:direct"}
    for _ in range(100):  # four writers per iteration: a probe not on the last write switches
        for conn in conns:
            conn.write()
        await _iteration()
        if box.coalescing:
            break
    assert box.coalescing
    log.clear()
    for conn in conns:
        conn.write()
    assert log == []  # held until the end of the iteration
    await _iteration()
    assert log == ["c0:flushed", "c1:flushed", "c2:flushed", "c3:flushed"]
    for _ in range(8):  # quiet again
        conns[0].write()
        await _iteration()
    assert not box.coalescing


async def test_coalesced_responses_are_whole_and_in_order(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request_head(reader)
            body = json.dumps({"path": line.split()[1]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        box = outbox(asyncio.get_running_loop())

        async def client(i: int) -> list[str]:
            conn = await RawConnection.open(qp.port)
            try:
                # Pipelined: several responses queued on one connection in one iteration.
                await conn.send(b"".join(get(f"/{i}/{j}") for j in range(5)))
                responses = await conn.read_responses(5)
                # HTTP/1.0 without keep-alive: the response is queued, then the connection closes.
                await conn.send(f"GET /{i}/last HTTP/1.0\r\n\r\n".encode())
                responses += await conn.read_responses(1)
                assert await conn.closed_by_peer()
            finally:
                await conn.close()
            return [json.loads(r.body)["path"] for r in responses]

        box.coalescing = True  # as under load; kept on by the load itself
        results = await asyncio.gather(*(client(i) for i in range(30)))
        for i, paths in enumerate(results):
            assert paths == [f"/{i}/{j}" for j in range(5)] + [f"/{i}/last"]
        assert qp.handler.in_flight == 0
