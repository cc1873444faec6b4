"""Which requests the queue-proxy sends twice (issue 13, requirement 4: never one whose bytes may
have reached the app, unless it is idempotent) and how it marks a request that reached no app."""

from __future__ import annotations

import asyncio

from tests.support import free_port, get, http_request, raw_upstream, read_request_head

from .conftest import MakeQP


async def test_a_dying_keep_alive_connection_replays_only_idempotent_requests(make_qp: MakeQP) -> None:
    seen: list[str] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers a connection's first request; reads its second and dies without answering
        # (the app may have acted on it: a keep-alive race looks exactly like this).
        line, _, _ = await read_request_head(reader)
        seen.append(line)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        line, _, _ = await read_request_head(reader)
        seen.append(line)
        writer.close()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        assert (await http_request(qp.port, get("/a"))).status == 200
        # Reuses the pooled connection, which dies: a GET goes once more, on a new connection.
        assert (await http_request(qp.port, get("/b"))).status == 200
        # The same with a POST (no body): its bytes may have reached the app, so no replay.
        post = b"POST /c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"
        resp = await http_request(qp.port, post)
        assert (resp.status, resp.body) == (502, b"EOF\n")
        assert resp.header("X-Sluice-Not-Sent") is None
        assert seen == ["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1", "POST /c HTTP/1.1"]


async def test_a_refused_dial_is_answered_502_marked_not_sent(make_qp: MakeQP) -> None:
    qp = await make_qp(free_port())  # nothing listens: the user container is gone
    resp = await http_request(qp.port, get("/"))
    assert resp.status == 502
    assert resp.body.endswith(b"connect: connection refused\n")
    assert resp.header("X-Sluice-Not-Sent") == "true"
    assert resp.header("X-Content-Type-Options") == "nosniff"


async def test_an_apps_own_502_never_claims_not_sent(make_qp: MakeQP) -> None:
    """An app that relays another service's Sluice 502 as is (a gateway) must not get its request
    replayed elsewhere: the mark is stripped from whatever the app answers, whole or streamed."""

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request_head(reader)
            if line.startswith("GET /whole"):
                writer.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nX-Sluice-Not-Sent: true\r\nX-App: 1\r\nContent-Length: 3\r\n\r\nbad"
                )
            else:
                writer.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nx-sluice-not-sent: true\r\nX-App: 1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n"
                )
            await writer.drain()

    async with raw_upstream(app) as port:
        qp = await make_qp(port)
        for path in ("/whole", "/streamed"):
            resp = await http_request(qp.port, get(path))
            assert (resp.status, resp.body, resp.header("X-App")) == (502, b"bad", "1"), path
            assert resp.header("X-Sluice-Not-Sent") is None, path
