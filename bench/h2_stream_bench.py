#!/usr/bin/env python3
"""h2c response streaming through the queue-proxy (issue 19): what the proxy adds to each small
DATA frame of a long-lived stream, and whether it ever holds one back.

The upstream (an h2c server on the `h2` library, its own process) answers each request with a
head and then one 12-byte DATA frame every `--interval` ms, each carrying the CLOCK_MONOTONIC
time it was sent (shared by every process on the machine) and its index. The client (this
process, also on `h2`) opens `--streams` concurrent streams over one connection to the upstream
directly and, at the same time, as many over one connection through the proxy, and records per
frame arrival − send. Both paths run at once so that they see the same machine noise; the
proxy's added delay is taken per frame pair (same stream number, same index: via the proxy −
direct) and reported as p50/p99/max. A frame held back until the next one (buffering) would show
as a whole interval of added delay, and as a DATA frame carrying two payloads ("merged").

The proxy is pinned to CPU 0 (``taskset -c 0``), the upstream and the client to CPU 1.

    python bench/h2_stream_bench.py [--seconds 5] [--interval 10] [--streams 1,20]
                                    [--baseline DIR] [--out bench/results/h2stream-<ts>.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpc_bench import write_report
from proxy_bench import LOOPBACK, REPO, BenchError, Processes, free_port, free_ports, qp_env, terminate_on_signals

UPSTREAM = """
import asyncio, struct, sys, time
import h2.config, h2.connection, h2.events

INTERVAL = float(sys.argv[2]) / 1000.0
COUNT = int(sys.argv[3])

class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.c.initiate_connection()
        self.t.write(self.c.data_to_send())

    def data_received(self, data):
        for e in self.c.receive_data(data):
            if isinstance(e, h2.events.RequestReceived):
                asyncio.ensure_future(self.stream(e.stream_id))
            elif isinstance(e, h2.events.DataReceived):
                self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        self.t.write(self.c.data_to_send())

    async def stream(self, sid):
        self.c.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/octet-stream")])
        self.t.write(self.c.data_to_send())
        start = time.monotonic()
        for i in range(COUNT):
            await asyncio.sleep(max(0.0, start + (i + 1) * INTERVAL - time.monotonic()))
            self.c.send_data(sid, struct.pack(">QI", time.monotonic_ns(), i), end_stream=i == COUNT - 1)
            self.t.write(self.c.data_to_send())

async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", port)
    await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


_FRAME = struct.Struct(">QI")  # send time (ns), frame index


class _Client(asyncio.Protocol):
    def __init__(self, streams: int) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.delays: dict[tuple[int, int], float] = {}  # (stream number, frame index) → ms
        self.merged = 0  # DATA frames carrying more than one payload
        self.statuses: list[int] = []
        self.ended = 0
        self.streams = streams
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        for _ in range(self.streams):
            sid = self.conn.get_next_available_stream_id()
            request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"bench"), (b":path", b"/")]
            self.conn.send_headers(sid, request, end_stream=True)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                payload = event.data or b""
                if len(payload) > _FRAME.size:
                    self.merged += 1
                for at in range(0, len(payload) - _FRAME.size + 1, _FRAME.size):
                    sent, index = _FRAME.unpack_from(payload, at)
                    self.delays[((event.stream_id or 1) // 2, index)] = (now - sent) / 1e6
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
            elif isinstance(event, h2.events.ResponseReceived):
                self.statuses.append(int(dict(event.headers or [])[b":status"]))
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended += 1
                if self.ended == self.streams and not self.done.done():
                    self.done.set_result(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(BenchError(f"connection lost: {exc}"))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)


async def _measure(ports: tuple[int, int], streams: int, timeout: float) -> tuple[_Client, _Client]:
    """Streams to the upstream directly and through the proxy, at the same time."""
    loop = asyncio.get_running_loop()
    pairs = [await loop.create_connection(lambda: _Client(streams), LOOPBACK, port) for port in ports]
    try:
        await asyncio.wait_for(asyncio.gather(*(client.done for _, client in pairs)), timeout)
    finally:
        for transport, _ in pairs:
            transport.close()
    for _, client in pairs:
        if any(status != 200 for status in client.statuses):
            raise BenchError(f"statuses {client.statuses}")
    return pairs[0][1], pairs[1][1]


@dataclass(slots=True)
class Row:
    target: str
    streams: int
    direct: list[float]
    via: list[float]
    added: list[float]  # per frame pair: via the proxy − direct
    merged: int


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port}")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=10.0, help="ms between DATA frames")
    ap.add_argument("--streams", default="1,20")
    ap.add_argument("--targets", default="sluice")
    ap.add_argument("--baseline", default=None, help="checkout whose proxy runs as target sluice-base")
    ap.add_argument("--python", default=str(REPO / ".venv/bin/python"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("needs taskset and 2 CPUs", file=sys.stderr)
        return 2
    targets = args.targets.split(",")
    if "sluice-base" in targets and not args.baseline:
        print("target sluice-base needs --baseline DIR", file=sys.stderr)
        return 2
    count = max(1, int(args.seconds * 1000 / args.interval))
    os.sched_setaffinity(0, {1})  # the client shares CPU 1 with the upstream
    workdir = Path(tempfile.mkdtemp(prefix="h2stream-bench-"))
    procs = Processes(workdir)
    load_before = os.getloadavg()
    rows: list[Row] = []
    try:
        with terminate_on_signals():
            upstream_port = free_port()
            script = workdir / "upstream.py"
            script.write_text(UPSTREAM)
            argv = ["taskset", "-c", "1", args.python, str(script), str(upstream_port), str(args.interval), str(count)]
            procs.spawn("upstream", argv)
            _wait_for_port(upstream_port)
            for target in targets:
                if target in ("sluice", "sluice-base"):
                    ports = free_ports(4)
                    port = ports[0]
                    cwd = REPO if target == "sluice" else Path(args.baseline).resolve()
                    argv = ["taskset", "-c", "0", args.python, "-m", "proxy"]
                    proc = procs.spawn(target, argv, env=qp_env(upstream_port, 0, ports), cwd=cwd)
                    _wait_for_port(port)
                else:
                    raise BenchError(f"unknown target {target!r}")
                for streams in (int(s) for s in args.streams.split(",")):
                    direct, via = asyncio.run(_measure((upstream_port, port), streams, args.seconds + 30))
                    for client in (direct, via):
                        if len(client.delays) != streams * count:
                            raise BenchError(f"{target}: {len(client.delays)} frames, expected {streams * count}")
                    added = [via.delays[key] - direct.delays[key] for key in via.delays]
                    row = Row(
                        target, streams, list(direct.delays.values()), list(via.delays.values()), added, via.merged
                    )
                    rows.append(row)
                    print(
                        f"{target:11} streams={streams:<3} added p50={_pct(added, 0.5):.3f} ms "
                        f"p99={_pct(added, 0.99):.3f} ms max={max(added):.3f} ms merged={via.merged}",
                        flush=True,
                    )
                procs.stop(proc)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    write_report(render(rows, args, count, load_before, os.getloadavg()), args.out, "h2stream")
    return 0


def render(
    rows: list[Row],
    args: argparse.Namespace,
    count: int,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> str:
    lines = [
        "# h2c response streaming through the queue-proxy (bench/h2_stream_bench.py)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f}",
        f"{count} DATA frames of 12 bytes per stream, one every {args.interval:g} ms; "
        "proxy on CPU 0, upstream + client on CPU 1; direct and proxied streams at the same time",
        "",
        "| target | streams | frames | direct p50 / p99 ms | via proxy p50 / p99 ms "
        "| added p50 ms | added p99 ms | added max ms | merged frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.streams} | {len(r.via)} | {_pct(r.direct, 0.5):.3f} / {_pct(r.direct, 0.99):.3f} "
            f"| {_pct(r.via, 0.5):.3f} / {_pct(r.via, 0.99):.3f} | {_pct(r.added, 0.5):.3f} "
            f"| {_pct(r.added, 0.99):.3f} | {max(r.added):.3f} | {r.merged} |"
        )
    lines += ["", "Command: `python bench/h2_stream_bench.py " + " ".join(sys.argv[1:]) + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
