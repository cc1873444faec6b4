"""Probing a queue-proxy before sending it traffic (CONTRACT.md §3.4).

`GET /healthz` with `K-Network-Probe: queue` and `User-Agent: Knative-Activator-Probe`,
always HTTP/1.1; success is status 200 with body exactly `queue`. The probe goes
through the same `UpstreamPool` the requests use, so the keep-alive connection it
opens is the one the first held request is forwarded on (§3.7) — no second dial on
the cold-start path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sluice.http.client import UpstreamConnection, UpstreamPool, WholeResponseAsParts

__all__ = ["ProbeResult", "probe_queue_proxy"]

PROBE_UA = b"Knative-Activator-Probe"
_MAX_BODY = 64  # `queue` is all we compare against


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    # A response that a mesh sidecar would not have produced (not 502/503): the pod is
    # reachable directly, so the ClusterIP fallback is not needed (§3.4).
    not_mesh: bool
    error: str = ""


class _ProbeSink(WholeResponseAsParts):
    __slots__ = ("body", "future", "status")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.status = 0
        self.body = b""

    def _done(self, exc: BaseException | None = None) -> None:
        if not self.future.done():
            if exc is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(exc)

    # The engine's ResponseSink callbacks; the head/trailer arguments (whose shape the
    # engine is free to change) are not needed for a probe, so they are taken as `*_`.
    def on_interim(self, status: int, *_: Any) -> None:
        return None

    def on_response_head(self, status: int, *_: Any) -> None:
        self.status = status

    def on_response_body(self, data: bytes) -> None:
        if len(self.body) < _MAX_BODY:
            self.body += data[:_MAX_BODY]

    def on_response_end(self, *_: Any) -> None:
        self._done()

    def on_upstream_error(self, exc: BaseException) -> None:
        self._done(exc)

    def on_upgrade(self, status: int, *_: Any) -> None:
        self._done(ConnectionError("unexpected upgrade"))

    def on_read_done(self) -> None:
        return None

    def pause_request_body(self) -> None:
        return None

    def resume_request_body(self) -> None:
        return None


def probe_request(host: bytes, extra: bytes = b"") -> bytes:
    return (
        b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: " + PROBE_UA
        + b"\r\nK-Network-Probe: queue\r\n" + extra + b"\r\n"
    )  # fmt: skip


async def probe_queue_proxy(pool: UpstreamPool, host: bytes, timeout: float, extra: bytes = b"") -> ProbeResult:
    """One probe within `timeout` seconds (dial included). Never raises."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn: UpstreamConnection | None = None
    try:
        conn = pool.acquire_nowait()
        if conn is None:
            conn = await asyncio.wait_for(pool.connect(), timeout)
        future: asyncio.Future[None] = loop.create_future()
        sink = _ProbeSink(future)
        conn.begin(sink, probe_request(host, extra), head_request=False, has_body=False)
        await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
    except (TimeoutError, OSError, ConnectionError) as exc:
        if conn is not None and conn.sink is not None:
            conn.close()  # mid-response: must not go back to the pool
        return ProbeResult(False, False, str(exc) or type(exc).__name__)
    except asyncio.CancelledError:
        if conn is not None and conn.sink is not None:
            conn.close()
        raise
    except Exception as exc:  # a malformed response (httptools error) and the like
        if conn is not None:
            conn.close()
        return ProbeResult(False, False, str(exc) or type(exc).__name__)
    ok = sink.status == 200 and sink.body == b"queue"
    return ProbeResult(ok, sink.status not in (502, 503), "" if ok else f"status {sink.status}")
