"""A user app for the long-lived e2e tests: /ws echoes text messages (websocket), /sse sends an
event at once and then every 0.2 s (`?n=` events, else until the client leaves), /healthz.
Listens on 127.0.0.1:$PORT like the other sample apps."""

from __future__ import annotations

import asyncio
import os

from aiohttp import WSMsgType, web


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str("echo:" + msg.data)
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


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> None:
    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/sse", sse)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")), print=None)


if __name__ == "__main__":
    main()
