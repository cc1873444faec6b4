"""Request logs and :9091 metrics wired into a running queue-proxy (CONTRACT.md §2.10)."""

from __future__ import annotations

import io
import json

from aiohttp import web

from tests.proxy.conftest import MakeQP
from tests.support import free_port, get, http_request, raw_upstream, read_request_head
from tests.telemetry.prom import scrape


async def test_default_request_log_line_and_prometheus_metrics(make_qp: MakeQP) -> None:
    import asyncio

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request_head(reader)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    metrics_port = free_port()
    obs = json.dumps(
        {"requestMetrics": {"protocol": "prometheus"}, "enableRequestLog": True, "metrics": {}, "tracing": {}}
    )
    async with raw_upstream(app) as port:
        qp = await make_qp(
            port, OBSERVABILITY_CONFIG=obs, METRICS_PROMETHEUS_PORT=str(metrics_port), CONTAINER_CONCURRENCY="4"
        )
        assert qp.observer is not None
        sink = io.BytesIO()
        qp.observer.out = sink
        resp = await http_request(qp.port, get("/path?q=1", {"User-Agent": "tester/1", "Referer": "r"}))
        assert resp.status == 201
        # A probe is neither logged (enableProbeRequestLog false) nor measured.
        await http_request(qp.port, get("/", {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}))
        lines = sink.getvalue().decode().splitlines()
        assert len(lines) == 1
        entry = json.loads(lines[0])
        req = entry["httpRequest"]
        assert (req["requestMethod"], req["requestUrl"], req["status"]) == ("GET", "/path?q=1", 201)
        assert (req["responseSize"], req["userAgent"], req["protocol"]) == ("5", "tester/1", "HTTP/1.1")
        assert req["serverIp"] == "127.0.0.1" and req["latency"].endswith("s")
        prom = await scrape(metrics_port)
        assert prom.values("kn_serving_invocation_duration_seconds_count", http_response_status_code="201") == [1]
        assert prom.types["kn_serving_invocation_duration_seconds"] == "histogram"
        assert prom.values("kn_serving_queue_depth") == [0]
        assert prom.values("sluice_queue_wait_seconds_count") == [1]


async def test_default_config_builds_no_observer(make_qp: MakeQP) -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    qp = await make_qp(free_port())
    assert qp.observer is None and qp.user_metrics_server is None
    await runner.cleanup()
