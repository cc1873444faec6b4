"""Forwarding through a real queue-proxy over real sockets (CONTRACT.md §2.6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.proxy.conftest import MakeQP
from tests.support import RawConnection, get, http_request, raw_upstream, read_request_head


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
            "body_len": len(body),
            "body": body[:64].decode("latin-1"),
        }
    )


async def stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    for i in range(int(request.query.get("n", "3"))):
        await resp.write(f"chunk{i};".encode())
        await asyncio.sleep(float(request.query.get("gap", "0")))
    await resp.write_eof()
    return resp


async def status(request: web.Request) -> web.StreamResponse:
    return web.Response(status=int(request.match_info["code"]), text="x" if request.method != "HEAD" else None)


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/stream", stream)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    yield port
    await runner.cleanup()


def headers_of(resp_body: bytes) -> dict[str, str]:
    data = json.loads(resp_body)
    return {k.lower(): v for k, v in data["headers"]}


async def test_keep_alive_and_pooled_upstream(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    for i in range(5):
        resp = await conn.request(get(f"/n{i}"))
        assert resp.status == 200
        assert json.loads(resp.body)["path"] == f"/n{i}"
    await conn.close()
    # Sequential requests reused one pooled upstream connection.
    assert qp.pool.open_connections == 1


async def test_header_rules(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    req = (
        b"GET /h?x=1 HTTP/1.1\r\nHost: inbound.example\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Authorization: Basic abc\r\nTe: trailers, deflate\r\n"
        b"Knative-Serving-Revision: hello-00001\r\nKnative-Serving-Namespace: default\r\n"
        b"K-Original-Host: original.example\r\nK-Proxy-Request: activator\r\n"
        b"X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a.example\r\n"
        b"X-Custom: kept\r\n\r\n"
    )
    resp = await http_request(qp.port, req)
    assert resp.status == 200
    seen = headers_of(resp.body)
    for gone in (
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "knative-serving-revision",
        "knative-serving-namespace",
        "k-original-host",
    ):
        assert gone not in seen, gone
    assert seen["host"] == "original.example"
    assert seen["te"] == "trailers"
    assert seen["k-proxy-request"] == "activator"  # not stripped (§1.2)
    assert seen["x-custom"] == "kept"
    assert seen["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    assert seen["forwarded"] == "for=10.0.0.1;host=a.example;proto=https, for=10.0.0.2"
    assert "user-agent" not in seen  # none added when the client sent none
    # The proxy adds no Server header of its own: the only one is the app's.
    assert resp.header_names().count("server") == 1 and "aiohttp" in (resp.header("Server") or "")


async def test_forwarded_shim_quotes_ipv6_and_respects_existing(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    resp = await http_request(qp.port, get("/", {"X-Forwarded-For": "2001:db8::1, 10.0.0.2"}))
    assert headers_of(resp.body)["forwarded"] == 'for="[2001:db8::1]", for=10.0.0.2'
    resp = await http_request(qp.port, get("/", {"X-Forwarded-Proto": "http"}))
    assert headers_of(resp.body)["forwarded"] == "proto=http"
    resp = await http_request(qp.port, get("/", {"Forwarded": "for=1.1.1.1", "X-Forwarded-For": "2.2.2.2"}))
    assert headers_of(resp.body)["forwarded"] == "for=1.1.1.1"


async def test_request_bodies_content_length_and_chunked(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    body = b"a" * 100_000
    resp = await http_request(qp.port, b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert json.loads(resp.body)["body_len"] == 100_000
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    resp = await http_request(qp.port, b"POST /ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    data = json.loads(resp.body)
    assert data["body"] == "hello world"
    assert headers_of(resp.body)["transfer-encoding"] == "chunked"


async def test_streamed_response_arrives_before_upstream_finishes(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    await conn.send(get("/stream?n=3&gap=0.3"))
    first = await asyncio.wait_for(conn.reader.readuntil(b"chunk0;"), 0.25)
    assert b"Transfer-Encoding: chunked" in first
    rest = await asyncio.wait_for(conn.reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"chunk1;" in rest and b"chunk2;" in rest
    await conn.close()


async def test_head_and_no_body_statuses(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    head = await conn.request(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
    assert head.status == 200 and head.body == b""
    assert int(head.header("Content-Length") or 0) > 0
    # The same connection still works after a HEAD (no stray body bytes).
    resp = await conn.request(get("/status/204"))
    assert resp.status == 204 and resp.body == b""
    resp = await conn.request(get("/after"))
    assert json.loads(resp.body)["path"] == "/after"
    await conn.close()


async def test_pipelined_requests_answered_in_order(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    await conn.send(get("/p1") + get("/stream?n=2&gap=0.05") + get("/p3"))
    responses = await conn.read_responses(3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert json.loads(responses[0].body)["path"] == "/p1"
    assert responses[1].body == b"chunk0;chunk1;"
    assert json.loads(responses[2].body)["path"] == "/p3"
    await conn.close()


async def test_expect_100_continue(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _line, headers, _ = await read_request_head(reader)
        assert headers.get("expect") == "100-continue"
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(int(headers["content-length"]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        conn = await RawConnection.open(qp.port)
        await conn.send(b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = await conn.read_responses(0)
        line = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 2)
        assert line.startswith(b"HTTP/1.1 100 Continue"), (interim, line)
        resp = await conn.request(b"data")
        assert resp.status == 200 and resp.body == b"data"
        await conn.close()


async def test_upstream_refused_gives_502_with_go_text(make_qp: MakeQP) -> None:
    from tests.support import free_port

    dead = free_port()
    qp = await make_qp(dead)
    resp = await http_request(qp.port, get("/"))
    assert resp.status == 502
    assert resp.body == f"dial tcp 127.0.0.1:{dead}: connect: connection refused\n".encode()
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert qp.handler.in_flight == 0


async def test_upstream_reset_mid_response_aborts_client(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        conn = await RawConnection.open(qp.port)
        await conn.send(get("/"))
        data = await asyncio.wait_for(conn.reader.read(), 5)  # until the proxy closes
        assert data.endswith(b"partial")
        await conn.close()
        assert qp.handler.in_flight == 0


async def test_upstream_closes_before_responding_gives_502(make_qp: MakeQP) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.transport.abort()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        resp = await http_request(qp.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        assert resp.status == 502


async def test_malformed_requests_get_4xx(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    resp = await conn.request(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    assert resp.status == 400
    assert await conn.closed_by_peer()
    await conn.close()
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    conn = await RawConnection.open(qp.port)
    resp = await conn.request(big)
    assert resp.status == 431
    await conn.close()
    assert qp.handler.in_flight == 0


async def test_http10_client_gets_close_delimited_stream(make_qp: MakeQP, upstream: int) -> None:
    qp = await make_qp(upstream)
    conn = await RawConnection.open(qp.port)
    await conn.send(b"GET /stream?n=2 HTTP/1.0\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(conn.reader.read(), 5)
    assert b"Transfer-Encoding" not in data
    assert data.endswith(b"chunk0;chunk1;")
    await conn.close()
