"""A user app with long-lived requests, for the queue-proxy and e2e tests: /ws echoes text
messages (websocket), /sse sends an event at once and then every 0.2 s (`?n=` events, else until
the client leaves), /late answers after 2 s, /healthz. Run alone (`python -m tests.stream_app`)
it listens on 127.0.0.1:$PORT like the other sample apps."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from aiohttp import WSMsgType, web


def make_app(close_codes: list[int | None] | None = None) -> web.Application:
    """The app; `close_codes` collects the close code each websocket ended with."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
        if close_codes is not None:
            close_codes.append(sock.close_code)
        return sock

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        n = int(request.query.get("n", "0"))
        i = 0
        while not n or i < n:
            await resp.write(f"data: {i}\n\n".encode())
            i += 1
            await asyncio.sleep(0.2)
        await resp.write_eof()
        return resp

    async def late(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)
        return web.Response(text="late")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/sse", sse)
    app.router.add_get("/late", late)
    app.router.add_get("/healthz", healthz)
    return app


async def echo_for(sock: aiohttp.ClientWebSocketResponse, seconds: float, pause: float = 0.0) -> int:
    """Sends numbered messages and checks each echo, for `seconds` (at least one message);
    returns how many."""
    t0 = time.monotonic()
    i = 0
    while True:
        await sock.send_str(str(i))
        msg = await sock.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, f"echo:{i}")
        i += 1
        if time.monotonic() - t0 >= seconds:
            return i
        await asyncio.sleep(pause)


async def read_events(resp: aiohttp.ClientResponse) -> list[str]:
    """An event stream's `data:` values until it ends (an incomplete chunked body raises)."""
    return [line[6:].strip().decode() async for line in resp.content if line.startswith(b"data: ")]


def main() -> None:
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")), print=None)


if __name__ == "__main__":
    main()
