"""CPU cost of the queue-proxy's per-request Python work, without sockets.

Drives the real ServerConnection → QueueProxy → Forwarder → UpstreamConnection path
with in-memory transports: a request is fed as bytes, the upstream's canned nginx
response is fed back, and the response bytes are checked. What it measures is the
part of the per-request cost that is ours (the kernel's share is measured by
bench/proxy_bench.py). Run: python bench/hotpath_micro.py [--requests N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from proxy.drain import Drainer
from proxy.handler import WATCHED_HEADERS, QueueProxy
from sluice.http.client import UpstreamConnection, UpstreamPool
from sluice.http.outbox import outbox
from sluice.http.server import HttpServer, ServerConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8012\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 13:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, parts: Any) -> None:
        self.out.append(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def run(requests: int, cc: int, profile: bool) -> float:
    pool = UpstreamPool("127.0.0.1", 1, max_idle=10)
    upstream = UpstreamConnection(pool)
    up_t = FakeTransport()
    upstream.connection_made(up_t)  # type: ignore[arg-type]
    pool.idle.append(upstream)
    qp = QueueProxy(pool, cc, timeout=300.0, response_start_timeout=0.0, idle_timeout=0.0,
                    drainer=Drainer(30.0), readiness=None)
    server = HttpServer(qp, watch=WATCHED_HEADERS)
    conn = ServerConnection(server)
    down_t = FakeTransport()
    conn.connection_made(down_t)  # type: ignore[arg-type]

    box = outbox(asyncio.get_running_loop())
    async def batch(n: int) -> None:
        # Each half in a loop iteration of its own, as at c=1: the outbox stays direct
        # (its load probe, every 64 writes, finds one write per iteration).
        for _ in range(n):
            conn.data_received(REQUEST)
            await asyncio.sleep(0)
            upstream.data_received(RESPONSE)
            await asyncio.sleep(0)

    async def idle(n: int) -> None:
        for _ in range(2 * n):
            await asyncio.sleep(0)

    await batch(1000)
    assert not box.coalescing
    assert down_t.out[-1].endswith(b"ok") and b"200 OK" in down_t.out[-1], down_t.out[-3:]
    down_t.out.clear()
    up_t.out.clear()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t0 = time.process_time()  # CPU time: steadier than wall time on a shared machine
    await batch(requests)
    elapsed = time.process_time() - t0
    t1 = time.process_time()
    await idle(requests)  # the loop iterations themselves are not ours: subtracted
    elapsed -= time.process_time() - t1
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    assert len(down_t.out) == requests and len(up_t.out) == requests
    qp.deadlines.close()
    return elapsed / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--cc", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    us = asyncio.run(run(args.requests, args.cc, args.profile))
    print(f"python work per proxied request (cc={args.cc}): {us:.2f} µs")


if __name__ == "__main__":
    main()
