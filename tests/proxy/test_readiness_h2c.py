"""HTTP readiness probes with ENABLE_HTTP2_AUTO_DETECTION (CONTRACT.md §2.5): h2c first,
then HTTP/1.1; without the flag, HTTP/1.1 only. Real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events

from proxy.readiness import ReadinessProber, parse_readiness_probes
from tests.support import raw_upstream, read_request_head


@contextlib.asynccontextmanager
async def h2c_only_server(status: int) -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """Speaks only prior-knowledge h2c; records the request headers it saw."""
    seen: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            try:
                events = conn.receive_data(data)
            except Exception:
                return  # not h2 (an HTTP/1.1 request): hang up, as an h2c-only server does
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    seen.append({str(k): str(v) for k, v in event.headers})
                    conn.send_headers(event.stream_id, [(":status", str(status))], end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), seen
    finally:
        server.close()


def _prober(port: int, auto: bool) -> ReadinessProber:
    probe = json.dumps(
        {
            "httpGet": {
                "path": "/ready",
                "port": port,
                "host": "127.0.0.1",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}],
            },
            "periodSeconds": 1,
            "timeoutSeconds": 1,
        }
    )
    return ReadinessProber(parse_readiness_probes(probe, False), http2_auto_detection=auto)


async def test_h2c_only_app_is_ready_with_auto_detection() -> None:
    async with h2c_only_server(200) as (port, seen):
        assert await _prober(port, auto=True).check()
        assert seen[0][":path"] == "/ready" and seen[0]["user-agent"] == "kube-probe//"
        assert seen[0]["x-probe"] == "1"
        # Without the flag the probe speaks HTTP/1.1 only, which this app refuses.
        assert not await _prober(port, auto=False).check()


async def test_h2c_error_status_falls_back_to_http1() -> None:
    async with h2c_only_server(503) as (port, _seen):
        assert not await _prober(port, auto=True).check()


async def test_http1_only_app_is_ready_with_auto_detection() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)  # an h2 preface fails here: the connection closes
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async with raw_upstream(app) as port:
        assert await _prober(port, auto=True).check()
        assert await _prober(port, auto=False).check()
