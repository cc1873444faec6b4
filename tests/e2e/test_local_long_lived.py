"""End-to-end long-lived requests (issue 13, requirement 5) through the whole `sluice local` path:
ingress → activator (target-burst-capacity -1 keeps it in the path) → queue-proxy → an aiohttp
app. A websocket and an event stream outlive the revision's response-start timeout
(knative/serving#16169); the websocket is ended at the revision timeout with a Close frame 1001,
not a cut connection."""

from __future__ import annotations

import sys
import time

import aiohttp

from tests.stream_app import echo_for, read_events

from .conftest import ROOT, Local, service

DOMAIN = "127.0.0.1.sslip.io"
HOST = f"streams.default.{DOMAIN}"


async def test_websocket_and_event_stream_through_ingress_and_activator(local: Local) -> None:
    body = service(
        "streams",
        {"autoscaling.knative.dev/target-burst-capacity": "-1", "autoscaling.knative.dev/min-scale": "1"},
        command=[sys.executable, "-m", "tests.stream_app"],
    )
    spec = body["spec"]["template"]["spec"]
    spec["timeoutSeconds"] = 5
    spec["responseStartTimeoutSeconds"] = 1
    spec["containers"][0]["workingDir"] = str(ROOT)  # for `-m tests.stream_app`
    local.apply(body)
    local.wait_for("the service ready", lambda: (svc := local.service("streams")) and svc["ready"] == "True", 90)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{local.url}/sse?n=10", headers={"Host": HOST}) as resp:
            assert resp.status == 200
            events = await read_events(resp)
        assert events == [str(i) for i in range(10)]  # 2 s of events, past the 1 s start timeout
        async with session.ws_connect(f"{local.url}/ws", headers={"Host": HOST}) as sock:
            t0 = time.monotonic()
            await echo_for(sock, 2.5)
            msg = await sock.receive(timeout=15)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            assert msg.data == 1001
            assert 4.0 < time.monotonic() - t0 < 10.0
