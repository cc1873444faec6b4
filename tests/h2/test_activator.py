"""HTTP/2 and websockets through the activator and a real `python -m proxy` (CONTRACT.md §3.2
"HTTP/1.1 + h2c on both", §3.7 "HTTP/2 inbound → h2c upstream"): gRPC with grpcio both ends,
and a scale-from-zero whose first request is a websocket upgrade."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]

from tests.activator.conftest import eventually
from tests.support import QueueProxySubprocess

from .conftest import Kube, MakeActivator
from .grpc_app import method, start_server
from .h2util import H2Client
from .wsapp import ws_app

REV = "hello-00001"
ROUTING = (("knative-serving-revision", REV), ("knative-serving-namespace", "default"))


async def test_grpc_through_activator_and_queue_proxy(kube: Kube, make_activator: MakeActivator) -> None:
    server, port, state = start_server()
    qp = QueueProxySubprocess(port, CONTAINER_CONCURRENCY="2").start()
    try:
        await kube.create_revision(REV, cc=2)
        await kube.set_private(REV, [("127.0.0.1", qp.port)])
        act = await make_activator()
        await eventually(lambda: (e := act.revisions.get(("default", REV))) is not None and e.throttler.capacity >= 1)

        def calls(target: int) -> tuple[Any, ...]:
            with grpc.insecure_channel(f"127.0.0.1:{target}") as channel:
                reply, call = channel.unary_unary(method("Unary")).with_call(b"ping", timeout=5, metadata=ROUTING)
                trailers = [(m.key, m.value) for m in call.trailing_metadata()]
                streamed = list(channel.unary_stream(method("ServerStream"))(b"3", timeout=5, metadata=ROUTING))
                echoed = list(channel.stream_stream(method("Bidi"))(iter([b"x", b"y"]), timeout=5, metadata=ROUTING))
                try:
                    channel.unary_unary(method("Unary"))(b"abort:PERMISSION_DENIED", timeout=5, metadata=ROUTING)
                    code = None
                except grpc.RpcError as err:
                    code = err.code()
                return reply, trailers, streamed, echoed, code

        # Both activator ports serve h2c (§3.2).
        for target in (act.port, act.h2c_port):
            reply, trailers, streamed, echoed, code = await asyncio.to_thread(calls, target)
            assert reply == b"ping" and ("x-trailer", "done") in trailers
            assert streamed == [b"msg-0", b"msg-1", b"msg-2"] and echoed == [b"x", b"y"]
            assert code == grpc.StatusCode.PERMISSION_DENIED
        # The activator's mutations reached the app through the QP (§3.7).
        seen = dict(state.metadata[-1])
        assert "knative-serving-revision" not in seen and seen["k-proxy-request"] == "activator"
        assert state.calls == 8
        await eventually(lambda: act.revisions.entries[("default", REV)].throttler.in_flight == 0)
    finally:
        qp.stop()
        server.stop(0)


async def test_h2c_scale_from_zero_relayed_as_h2c_on_both_hops(kube: Kube, make_activator: MakeActivator) -> None:
    from .h2util import UpstreamRequest, h2_upstream, wait_ended

    async def app(req: UpstreamRequest) -> None:
        await wait_ended(req)
        assert req.conn is not None
        req.conn.respond(req.stream_id, 200)
        await req.conn.send_body(req.stream_id, b"\n".join(n + b"=" + v for n, v in req.headers), end=False)
        req.conn.trailers(req.stream_id, [(b"grpc-status", b"0")])

    async with h2_upstream(app) as up:
        await kube.create_revision(REV, cc=0)
        act = await make_activator()
        await eventually(lambda: act.revisions.get(("default", REV)) is not None)
        client = await H2Client.open(act.port)
        sid = client.start("/", headers=list(ROUTING), authority="hello.default.example.com")
        # Scale from zero: the stream waits in the activator until a pod is there.
        await eventually(lambda: act.revisions.entries[("default", REV)].throttler.live_waiting == 1)
        qp = QueueProxySubprocess(up.port).start()
        try:
            await kube.set_private(REV, [("127.0.0.1", qp.port)])
            result = await client.result(sid, 10)
        finally:
            qp.stop()
        assert result.status == 200 and result.trailers == [(b"grpc-status", b"0")]
        fields = dict(line.split(b"=", 1) for line in result.body.split(b"\n"))
        # HTTP/2 from the client, h2c to the QP, h2c to the app; the Host the client used is
        # restored by the QP from K-Original-Host (§2.6, §3.7).
        assert fields[b":authority"] == b"hello.default.example.com"
        assert fields[b"k-proxy-request"] == b"activator"
        assert b"knative-serving-revision" not in fields and b"k-original-host" not in fields
        await client.close()


async def test_websocket_scale_from_zero_through_activator_and_queue_proxy(
    kube: Kube, make_activator: MakeActivator
) -> None:
    async with ws_app() as user_port:
        await kube.create_revision(REV, cc=1)
        act = await make_activator()
        await eventually(lambda: act.revisions.get(("default", REV)) is not None)
        async with aiohttp.ClientSession() as session:
            # The first request to the scaled-to-zero revision is the upgrade itself.
            connecting = asyncio.get_running_loop().create_task(
                session.ws_connect(f"http://127.0.0.1:{act.port}/ws", headers=dict(ROUTING))
            )
            await eventually(lambda: act.revisions.entries[("default", REV)].throttler.live_waiting == 1)
            qp = QueueProxySubprocess(user_port, CONTAINER_CONCURRENCY="1").start()
            try:
                await kube.set_private(REV, [("127.0.0.1", qp.port)])
                ws = await asyncio.wait_for(connecting, 10)
                await ws.send_str("cold")
                assert (await ws.receive(timeout=5)).data == "COLD"
                # The tunnel holds the revision's only slot for its lifetime (§2.6).
                assert act.revisions.entries[("default", REV)].throttler.in_flight == 1
                await asyncio.sleep(1.2)
                await ws.send_str("later")
                assert (await ws.receive(timeout=5)).data == "LATER"
                await ws.close()
                await eventually(lambda: act.revisions.entries[("default", REV)].throttler.in_flight == 0)
            finally:
                qp.stop()
