"""Requests the sampler drops skip the SDK (sluice/telemetry/tracing.py ServerSpans.start), and
still propagate exactly what the SDK's non-recording span would: same headers, same trace id,
same flags, a fresh span id."""

from __future__ import annotations

import re

import pytest

from sluice.http.server import Exchange, HttpServer, ServerConnection
from sluice.telemetry.config import TraceSettings
from sluice.telemetry.tracing import ServerSpans, Tracing

PARENT = "0af7651916cd43dd8448eb211c80319c"
_SPAN_ID = re.compile(r"\b[0-9a-f]{16}\b")


def _exchange(*headers: tuple[str, str]) -> Exchange:
    ex = Exchange(ServerConnection(HttpServer(lambda ex: None)))
    ex.method, ex.url = b"GET", b"/"
    ex.headers = [(k.lower().encode(), k.encode(), v.encode()) for k, v in headers]
    return ex


@pytest.fixture
def spans() -> ServerSpans:
    # Nothing is sampled at rate 0, so the exporter (to a closed port) is never called.
    tracing = Tracing(TraceSettings("http/protobuf", "127.0.0.1:9", 0.0), {"service.name": "t"}, "test")
    return ServerSpans(tracing, "kn.queueproxy.proxy", "kn.queueproxy.wait", {})


def _normalized(propagation: bytes) -> str:
    """The header lines with every 16-hex span id replaced (they are random on both paths)."""
    return _SPAN_ID.sub("<span>", propagation.decode())


def _sdk(spans: ServerSpans, ex: Exchange) -> bytes:
    from sluice.telemetry.tracing import _Span

    span = _Span(spans, ex, None)
    assert not span.span.is_recording()
    return span.propagation


@pytest.mark.parametrize("flags", ["00", "02"])
def test_unsampled_parent_propagates_like_the_sdk(spans: ServerSpans, flags: str) -> None:
    ex = _exchange(("traceparent", f"00-{PARENT}-b7ad6b7169203331-{flags}"))
    fast = spans.start(ex)
    assert type(fast).__name__ == "_Unsampled"
    assert fast.trace_id == PARENT
    assert _normalized(fast.propagation) == _normalized(_sdk(spans, ex))
    assert b"b7ad6b7169203331" not in fast.propagation  # our own span id goes on, not the parent's
    fast.wait_done()
    fast.end(200)


def test_root_request_propagates_like_the_sdk(spans: ServerSpans) -> None:
    ex = _exchange(("user-agent", "curl"))
    fast = spans.start(ex)
    assert type(fast).__name__ == "_Unsampled"
    sdk = _sdk(spans, ex)
    assert re.sub(r"[0-9a-f]{32}", "<trace>", _normalized(fast.propagation)) == re.sub(
        r"[0-9a-f]{32}", "<trace>", _normalized(sdk)
    )
    assert fast.propagation.startswith(f"traceparent: 00-{fast.trace_id}-".encode())
    assert fast.propagation.count(fast.trace_id.encode()) == 2  # W3C and B3 carry the same trace


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", f"00-{PARENT}-b7ad6b7169203331-01")],  # sampled: recorded by the SDK
        [("traceparent", f"00-{PARENT}-b7ad6b7169203331-00"), ("tracestate", "a=b")],
        [("x-b3-traceid", PARENT), ("x-b3-spanid", "b7ad6b7169203331"), ("x-b3-sampled", "0")],
        [("traceparent", f"00-{PARENT}-0000000000000000-00")],  # invalid: the SDK starts a root
        [("traceparent", "garbage")],
    ],
)
def test_anything_else_takes_the_sdk(spans: ServerSpans, headers: list[tuple[str, str]]) -> None:
    assert type(spans.start(_exchange(*headers))).__name__ == "_Span"


def test_rate_one_samples_every_root() -> None:
    tracing = Tracing(TraceSettings("http/protobuf", "127.0.0.1:9", 1.0), {"service.name": "t"}, "test")
    spans = ServerSpans(tracing, "p", "w", {})
    assert all(type(spans.start(_exchange())).__name__ == "_Span" for _ in range(20))
    tracing.provider.shutdown()
