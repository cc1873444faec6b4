"""A small JSON debug endpoint (issue 17: "the autoscaler explains itself", and the activator's
view of its revisions, knative/serving#16679), on the engine's HttpServer.

Loopback only unless a bearer token is configured: without one, a request from any other
address gets 403 even if the listener was bound wider; with one, every request must carry
`Authorization: Bearer <token>`. The routes are callables returning JSON-able values, evaluated
per request (nothing is kept up to date in the background).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sluice.http.server import HttpExchange

__all__ = ["DEFAULT_DEBUG_HOST", "DebugHandler", "parse_debug_address"]

log = logging.getLogger("sluice.debug")

DEFAULT_DEBUG_HOST = "127.0.0.1"
_JSON = b"application/json"


def parse_debug_address(value: str, default_port: int) -> tuple[str, int] | None:
    """`host:port`, `:port` (loopback) or `off`/`none`/`""`-less default; None = disabled."""
    value = value.strip()
    if value.lower() in ("off", "none", "disabled"):
        return None
    if not value:
        return DEFAULT_DEBUG_HOST, default_port
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected host:port or off, got {value!r}")
    return host.strip("[]") or DEFAULT_DEBUG_HOST, int(port)


def _is_loopback(ip: bytes) -> bool:
    try:
        return ipaddress.ip_address(ip.decode("latin-1")).is_loopback
    except ValueError:
        return False


class DebugHandler:
    def __init__(self, routes: Mapping[str, Callable[[], Any]], token: str = "") -> None:
        self.routes = {path.encode(): fn for path, fn in routes.items()}
        self.token = token.encode()

    def __call__(self, ex: HttpExchange) -> None:
        if self.token:
            got = ex.header(b"authorization") or b""
            if not hmac.compare_digest(got, b"Bearer " + self.token):
                ex.respond_error(401, "a bearer token is required")
                return
        elif not _is_loopback(ex.client_ip):
            ex.respond_error(403, "the debug endpoint answers loopback clients only")
            return
        path = ex.url.partition(b"?")[0]
        route = self.routes.get(path)
        if route is None or ex.method != b"GET":
            ex.respond_error(404, "404 page not found")
            return
        try:
            body = json.dumps(route(), indent=1, sort_keys=True, default=str).encode() + b"\n"
        except Exception:
            log.exception("debug endpoint failed")
            ex.respond_error(500, "internal error")
            return
        ex.respond_text(200, body, content_type=_JSON)
