"""HTTP/2 on the queue-proxy's serving port, at the frame level (CONTRACT.md §2.3, §2.6-§2.8,
§2.11): an in-process queue-proxy, a raw h2 client and an h2c upstream on real sockets."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from tests.support import RawConnection, get, http_request

from .conftest import MakeQP
from .h2util import H2Client, UpstreamRequest, h2_upstream, wait_ended, wait_for

OK_TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]
# The client preface and an empty SETTINGS frame.
PREFACE_AND_SETTINGS = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def echo(req: UpstreamRequest) -> None:
    """Answers once the request ended: 200 with the request's fields as the body, and trailers."""
    await wait_ended(req)
    assert req.conn is not None
    lines = b"\n".join(n + b"=" + v for n, v in req.headers) + b"\nbody=" + req.body
    req.conn.respond(req.stream_id, 200, [(b"content-type", b"text/plain"), (b"x-app", b"1")])
    await req.conn.send_body(req.stream_id, lines, end=False)
    req.conn.trailers(req.stream_id, [(b"x-checksum", b"abc"), *OK_TRAILERS])


def fields_of(body: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in body.split(b"\n"):
        name, _, value = line.partition(b"=")
        out.setdefault(name, value)
    return out


async def test_prior_knowledge_h2c_is_relayed_as_h2c_with_trailers(make_qp: MakeQP) -> None:
    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port)
        result = await client.request(
            "/svc/Method?x=1",
            method="POST",
            headers=[("te", "trailers"), ("content-type", "application/grpc"), ("knative-serving-revision", "r")],
            body=b"payload",
            authority="hello.default.svc",
        )
        assert result.status == 200 and result.ended
        assert result.header(b"x-app") == b"1" and result.header(b"date")
        assert result.trailers == [(b"x-checksum", b"abc"), *OK_TRAILERS]
        seen = fields_of(result.body)
        # Upstream protocol mirrors downstream (§2.6): pseudo-headers carried over, Host from
        # :authority, te: trailers kept, Knative-Serving-* stripped, X-Forwarded-For appended.
        assert seen[b":method"] == b"POST" and seen[b":path"] == b"/svc/Method?x=1"
        assert seen[b":authority"] == b"hello.default.svc"
        assert seen[b"te"] == b"trailers" and seen[b"x-forwarded-for"] == b"127.0.0.1"
        assert b"knative-serving-revision" not in seen and seen[b"body"] == b"payload"
        # Many streams on one connection, one upstream connection reused.
        results = await asyncio.gather(*(client.request(f"/{i}") for i in range(20)))
        assert all(r.status == 200 and r.trailers[-2:] == OK_TRAILERS for r in results)
        assert len(app.conns) == 1
        # HTTP/1.1 on the same port is unaffected (§2.3).
        plain = await http_request(qp.port, get("/h1"))
        assert plain.status == 502  # the upstream speaks only h2c; HTTP/1.1 goes as HTTP/1.1
        await client.close()


async def test_k_original_host_and_probes_over_h2(make_qp: MakeQP) -> None:
    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port)
        r = await client.request("/", headers=[("k-original-host", "orig.example")], authority="10.0.0.1:8012")
        assert fields_of(r.body)[b":authority"] == b"orig.example"
        r = await client.request("/", headers=[("user-agent", "kube-probe/1.30"), ("k-network-probe", "queue")])
        assert (r.status, r.body) == (200, b"queue")
        r = await client.request("/", headers=[("k-network-probe", "probe")])
        assert r.status == 400
        assert r.body == b'a probe request must contain a non-empty "K-Network-Hash" header\n'
        assert r.header(b"content-type") == b"text/plain; charset=utf-8"
        assert r.header(b"x-content-type-options") == b"nosniff"
        assert not app.requests[1:]  # probes never reach the app
        await client.close()


async def test_upgrade_h2c_serves_the_request_as_stream_1(make_qp: MakeQP) -> None:
    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        settings = h2c.initiate_upgrade_connection()
        assert settings is not None
        conn = await RawConnection.open(qp.port)
        await conn.send(
            b"GET /up HTTP/1.1\r\nHost: up.example\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head == b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        await conn.send(h2c.data_to_send())
        events: list[h2.events.Event] = []
        body = b""
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            data = await asyncio.wait_for(conn.reader.read(65536), 5)
            assert data
            new = h2c.receive_data(data)
            events += new
            body += b"".join(e.data or b"" for e in new if isinstance(e, h2.events.DataReceived))
            await conn.send(h2c.data_to_send())
        response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        assert dict(response.headers or [])[b":status"] == b"200"
        seen = fields_of(body)
        assert seen[b":path"] == b"/up" and seen[b":authority"] == b"up.example"
        assert b"http2-settings" not in seen and b"upgrade" not in seen
        assert len(app.requests) == 1
        await conn.close()


async def test_upgrade_with_bad_settings_is_served_as_http1(make_qp: MakeQP) -> None:
    async def never(req: UpstreamRequest) -> None:
        return None

    async with h2_upstream(never) as app:
        qp = await make_qp(app.port)
        r = await http_request(
            qp.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: !!notbase64!!\r\n\r\n",
        )
        assert r.status == 502  # not upgraded: relayed as HTTP/1.1 to an h2c-only app


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        # A malformed preface (RFC 9113 §3.4): PROTOCOL_ERROR.
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", ErrorCodes.PROTOCOL_ERROR),
        # A PING on a stream (§6.7 says stream 0 only): PROTOCOL_ERROR.
        (
            PREFACE_AND_SETTINGS + b"\x00\x00\x08\x06\x00\x00\x00\x00\x0112345678",
            ErrorCodes.PROTOCOL_ERROR,
        ),
        # A frame announcing 16 MiB against the default 16 KiB maximum: FRAME_SIZE_ERROR, at once.
        (
            PREFACE_AND_SETTINGS + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",
            ErrorCodes.FRAME_SIZE_ERROR,
        ),
        # A garbage HPACK block: COMPRESSION_ERROR per RFC; h2 reports PROTOCOL_ERROR.
        (
            PREFACE_AND_SETTINGS + b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff",
            (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.COMPRESSION_ERROR),
        ),
    ],
    ids=["preface", "ping-on-stream", "frame-size", "hpack"],
)
async def test_bad_input_gets_goaway_with_the_error_code(
    make_qp: MakeQP, payload: bytes, code: ErrorCodes | tuple[ErrorCodes, ...]
) -> None:
    qp = await make_qp(1)
    conn = await RawConnection.open(qp.port)
    await conn.send(payload)
    data = b""
    while True:  # the server closes: never a hang
        chunk = await asyncio.wait_for(conn.reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    frames = _frames(data)
    goaways = [f for f in frames if f[0] == 7]
    assert goaways, frames
    error = int.from_bytes(goaways[-1][2][4:8], "big")
    assert error in (code if isinstance(code, tuple) else (code,))
    await conn.close()


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length]))
        data = data[9 + length :]
    return out


async def test_preface_split_byte_by_byte(make_qp: MakeQP) -> None:
    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        h2c.initiate_connection()
        h2c.send_headers(
            1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/s")], end_stream=True
        )
        conn = await RawConnection.open(qp.port)
        data = h2c.data_to_send()
        for byte in data[:40]:  # the preface and SETTINGS one byte per read
            await conn.send(bytes([byte]))
            await asyncio.sleep(0.001)
        await conn.send(data[40:])
        ended = False
        while not ended:
            data = await asyncio.wait_for(conn.reader.read(65536), 5)
            assert data
            for e in h2c.receive_data(data):
                ended = ended or isinstance(e, h2.events.StreamEnded)
            await conn.send(h2c.data_to_send())
        await conn.close()


async def test_client_reset_frees_the_breaker_slot_and_cancels_upstream(make_qp: MakeQP) -> None:
    async def slow(req: UpstreamRequest) -> None:
        if req.header(b":path") == b"/slow":
            return  # never answers
        await echo(req)

    async with h2_upstream(slow) as app:
        qp = await make_qp(app.port, CONTAINER_CONCURRENCY="1")
        client = await H2Client.open(qp.port)
        first = client.start("/slow")
        await wait_for(lambda: len(app.requests) == 1)
        second = client.start("/next")
        await asyncio.sleep(0.1)
        assert len(app.requests) == 1  # queued behind the only slot (§2.7)
        assert qp.handler.breaker is not None and qp.handler.breaker.admitted == 2
        client.reset(first)
        r = await client.result(second, 5)
        assert r.status == 200
        await wait_for(lambda: app.requests[0].reset == ErrorCodes.CANCEL)  # cancelled upstream too
        await wait_for(lambda: qp.handler.breaker is not None and qp.handler.breaker.admitted == 0)
        assert qp.handler.in_flight == 0
        await client.close()


async def test_streams_count_in_stats_and_breaker(make_qp: MakeQP) -> None:
    release = asyncio.Event()

    async def held(req: UpstreamRequest) -> None:
        await release.wait()
        await echo(req)

    async with h2_upstream(held) as app:
        qp = await make_qp(app.port, CONTAINER_CONCURRENCY="2")
        client = await H2Client.open(qp.port)
        qp.handler.report()
        sids = [client.start(f"/{i}", headers=[("k-proxy-request", "activator")]) for i in range(3)]
        await wait_for(lambda: len(app.requests) == 2)
        await asyncio.sleep(0.3)
        avg_c, avg_p, reqs, proxied = qp.handler.report()
        # Three streams admitted (two executing, one queued: queued ones count, §2.6/§2.9).
        assert (reqs, proxied) == (3.0, 3.0)
        assert 2.0 < avg_c <= 3.0 and 2.0 < avg_p <= 3.0
        assert qp.handler.in_flight == 3
        release.set()
        for sid in sids:
            assert (await client.result(sid)).status == 200
        await wait_for(lambda: qp.handler.in_flight == 0)
        await client.close()


async def test_response_back_pressure_per_stream(make_qp: MakeQP) -> None:
    """A client that stops reading one stream stalls that stream's upstream at the windows,
    while another stream on the same connection still flows."""
    total = 16 << 20
    sent: dict[bytes, int] = {}

    async def big(req: UpstreamRequest) -> None:
        await wait_ended(req)
        assert req.conn is not None
        path = req.header(b":path") or b""
        req.conn.respond(req.stream_id, 200)
        size = total if path == b"/big" else 100_000
        sent[path] = 0
        while sent[path] < size:
            chunk = b"x" * min(65536, size - sent[path])
            n = await req.conn.send_body(req.stream_id, chunk, end=False)
            sent[path] += n
            if n < len(chunk):
                return
        req.conn.conn.end_stream(req.stream_id)
        req.conn.flush()

    async with h2_upstream(big) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port, auto_ack=False)
        stalled = client.start("/big")
        await asyncio.sleep(1.0)
        # Bounded by the client's window (64 KiB) + what we keep (64 KiB) + our upstream stream
        # window (1 MiB): nowhere near the 16 MiB the app wants to send.
        assert sent[b"/big"] < 2 << 20
        client.auto_ack = True
        other = await client.request("/small")
        assert other.status == 200 and len(other.body) == 100_000
        # Reading again drains the stalled stream to the end.
        client.ack(stalled)
        result = await client.result(stalled, 30)
        assert len(result.body) == total
        await client.close()


async def test_request_body_back_pressure(make_qp: MakeQP) -> None:
    """An upstream that does not read stalls the client's upload at the windows."""
    async with h2_upstream(echo, auto_ack=False) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port)
        sid = client.start("/up", method="POST", end=False)
        pushed = 0
        chunk = b"u" * 16384
        for _ in range(400):  # try 6.5 MiB
            if client.conn.local_flow_control_window(sid) < len(chunk):
                await asyncio.sleep(0.05)
                if client.conn.local_flow_control_window(sid) < len(chunk):
                    break
            client.send(sid, chunk)
            pushed += len(chunk)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        # The upstream window (64 KiB), our buffer and our 1 MiB stream window, no more.
        assert pushed < 3 << 20
        assert len(app.requests) == 1 and len(app.requests[0].body) <= 65535
        await client.close()


async def test_goaway_on_shutdown_lets_open_streams_finish(make_qp: MakeQP) -> None:
    release = asyncio.Event()

    async def held(req: UpstreamRequest) -> None:
        await release.wait()
        await echo(req)

    async with h2_upstream(held) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port)
        sid = client.start("/long")
        await wait_for(lambda: len(app.requests) == 1)
        shutdown = asyncio.get_running_loop().create_task(qp.main_server.shutdown())
        await wait_for(lambda: bool(client.goaways))
        assert client.goaways == [(sid, ErrorCodes.NO_ERROR)]
        await asyncio.sleep(0.1)
        assert not shutdown.done()  # waits for the open stream, like a busy HTTP/1.1 connection
        release.set()
        r = await client.result(sid)
        assert r.status == 200 and r.trailers[-2:] == OK_TRAILERS
        await asyncio.wait_for(shutdown, 5)
        await asyncio.wait_for(client.closed.wait(), 5)
        await client.close()


async def test_response_start_timeout_and_total_timeout_on_streams(make_qp: MakeQP) -> None:
    async def app(req: UpstreamRequest) -> None:
        await wait_ended(req)
        assert req.conn is not None
        if req.header(b":path") == b"/started":
            req.conn.respond(req.stream_id, 200)
            await req.conn.send_body(req.stream_id, b"part", end=False)
        # otherwise: never answers

    async with h2_upstream(app) as up:
        qp = await make_qp(up.port, REVISION_TIMEOUT_SECONDS="2", REVISION_RESPONSE_START_TIMEOUT_SECONDS="1")
        client = await H2Client.open(qp.port)
        silent, started = client.start("/silent"), client.start("/started")
        r = await client.result(silent, 5)
        assert (r.status, r.body) == (504, b"request timeout")
        # Started in time: only the total timeout applies; its text is appended and the stream ends (§2.8).
        r = await client.result(started, 5)
        assert r.status == 200 and r.body == b"partrequest timeout" and r.ended and not r.trailers
        await wait_for(lambda: all(q.reset == ErrorCodes.CANCEL for q in up.requests))
        await client.close()


async def test_upstream_reset_and_refused_dial(make_qp: MakeQP) -> None:
    async def resets(req: UpstreamRequest) -> None:
        assert req.conn is not None
        req.conn.conn.reset_stream(req.stream_id, ErrorCodes.INTERNAL_ERROR)
        req.conn.flush()

    async with h2_upstream(resets) as app:
        qp = await make_qp(app.port)
        client = await H2Client.open(qp.port)
        r = await client.request("/")
        assert r.status == 502
        assert r.body == b"stream error: stream ID 1; INTERNAL_ERROR; received from peer\n"
        await client.close()
    qp = await make_qp(1)
    client = await H2Client.open(qp.port)
    r = await client.request("/")
    assert r.status == 502 and r.body == b"dial tcp 127.0.0.1:1: connect: connection refused\n"
    await client.close()


def test_upgrade_settings_header_is_base64url() -> None:
    # Guard for the fixture above: h2 produces the token68 form Go's h2c handler decodes.
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = h2c.initiate_upgrade_connection()
    assert settings is not None
    base64.urlsafe_b64decode(settings + b"=" * (-len(settings) % 4))


async def test_tls_port_negotiates_h2_by_alpn(tmp_path: Path) -> None:
    import ssl

    from tests.proxy.test_process import _self_signed
    from tests.support import QueueProxySubprocess

    _self_signed(tmp_path)
    async with h2_upstream(echo) as app:
        qp = QueueProxySubprocess(app.port, SLUICE_CERT_DIR=str(tmp_path)).start()
        try:
            tls_port = int(qp.env["QUEUE_SERVING_TLS_PORT"])
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            for _ in range(50):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            client = H2Client(reader, writer)
            client.conn.initiate_connection()
            client.flush()
            client._task = asyncio.get_running_loop().create_task(client._read_loop())
            r = await client.request("/tls", method="POST", body=b"secret")
            # TLS h2 in, h2c to the app (§2.6), trailers relayed.
            assert r.status == 200 and r.trailers[-2:] == OK_TRAILERS
            assert fields_of(r.body)[b"body"] == b"secret"
            await client.close()
            # HTTP/1.1 clients still get HTTP/1.1 on the TLS port.
            ctx1 = ssl.create_default_context()
            ctx1.check_hostname = False
            ctx1.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx1)
            conn = RawConnection(reader, writer)
            assert (await conn.request(get("/"))).status == 502  # h2c-only app, HTTP/1.1 upstream
            await conn.close()
        finally:
            qp.stop()


async def test_upgrade_h2c_with_a_request_body(make_qp: MakeQP) -> None:
    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        settings = h2c.initiate_upgrade_connection()
        assert settings is not None
        conn = await RawConnection.open(qp.port)
        await conn.send(
            b"POST /up HTTP/1.1\r\nHost: up.example\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\nContent-Length: 5\r\n\r\nhello"
        )
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        await conn.send(h2c.data_to_send())
        body = b""
        ended = False
        while not ended:
            data = await asyncio.wait_for(conn.reader.read(65536), 5)
            assert data
            for e in h2c.receive_data(data):
                if isinstance(e, h2.events.DataReceived):
                    body += e.data or b""
                ended = ended or isinstance(e, h2.events.StreamEnded)
            await conn.send(h2c.data_to_send())
        seen = fields_of(body)
        assert seen[b":method"] == b"POST" and seen[b"body"] == b"hello" and seen[b"content-length"] == b"5"
        await conn.close()


async def test_upstream_closing_a_new_connection_at_once_is_a_502_not_a_hang(make_qp: MakeQP) -> None:
    """An h2c-only app answers an HTTP/1.1 request by sending SETTINGS and closing; the QP can
    see that close before its dial task resumes (found by the TLS test above, under load).
    Made deterministic with a pool whose new connections are already closed."""
    from sluice.http.client import UpstreamConnection, UpstreamPool

    class ClosingPool(UpstreamPool):
        async def connect(self) -> UpstreamConnection:
            conn = await super().connect()
            conn.close()
            await asyncio.sleep(0.01)  # connection_lost runs before the Forwarder resumes
            return conn

    async with h2_upstream(echo) as app:
        qp = await make_qp(app.port)
        qp.handler.pool = ClosingPool("127.0.0.1", app.port, max_idle=1)
        r = await http_request(qp.port, get("/"), timeout=3)
        assert (r.status, r.body) == (502, b"EOF\n")
