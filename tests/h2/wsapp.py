"""A real websocket app (aiohttp) standing in for the user container."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data.upper())
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


@contextlib.asynccontextmanager
async def ws_app() -> AsyncIterator[int]:
    """Serves `/ws` (echo, upper-cased) on 127.0.0.1; yields the port."""
    app = web.Application()
    app.router.add_get("/ws", _echo)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield port
    finally:
        await runner.cleanup()
