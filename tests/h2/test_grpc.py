"""gRPC through a real `python -m proxy` with grpcio on both sides (CONTRACT.md §2.6 "relay
HTTP/2 as h2c upstream (gRPC: trailers)", §6.1 item 5): the four call kinds, status and
trailers, deadlines, and the accounting of streams in the breaker, stats and drain."""

from __future__ import annotations

import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from sluice.wire import decode_stat
from tests.support import QueueProxySubprocess

from .grpc_app import EchoState, method, start_server


@pytest.fixture
def app() -> Iterator[tuple[int, EchoState]]:
    server, port, state = start_server()
    yield port, state
    server.stop(0)


@pytest.fixture
def qps() -> Iterator[list[QueueProxySubprocess]]:
    procs: list[QueueProxySubprocess] = []
    yield procs
    for proc in procs:
        proc.stop()


def start_qp(procs: list[QueueProxySubprocess], user_port: int, **env: str) -> QueueProxySubprocess:
    qp = QueueProxySubprocess(user_port, **env).start()
    procs.append(qp)
    return qp


class Feed:
    """A request iterator the test controls (client streaming / bidi)."""

    def __init__(self) -> None:
        self.items: queue.Queue[bytes | None] = queue.Queue()

    def __iter__(self) -> Iterator[bytes]:
        while (item := self.items.get()) is not None:
            yield item

    def put(self, item: bytes) -> None:
        self.items.put(item)

    def close(self) -> None:
        self.items.put(None)


def test_four_call_kinds_with_status_and_trailers(app: tuple[int, EchoState], qps: list[QueueProxySubprocess]) -> None:
    port, state = app
    qp = start_qp(qps, port)
    with grpc.insecure_channel(f"127.0.0.1:{qp.port}") as channel:
        reply, call = channel.unary_unary(method("Unary")).with_call(b"hello", timeout=5)
        assert reply == b"hello" and call.code() == grpc.StatusCode.OK
        assert ("x-trailer", "done") in [(m.key, m.value) for m in call.trailing_metadata()]
        assert list(channel.unary_stream(method("ServerStream"))(b"3", timeout=5)) == [b"msg-0", b"msg-1", b"msg-2"]
        assert channel.stream_unary(method("ClientStream"))(iter([b"a", b"b", b"c"]), timeout=5) == b"abc"
        # Bidi, interleaved: each reply arrives before the next request is sent.
        feed = Feed()
        replies = channel.stream_stream(method("Bidi"))(iter(feed), timeout=10)
        for word in (b"one", b"two", b"three"):
            feed.put(word)
            assert next(replies) == word
        feed.close()
        assert list(replies) == []
        # Large messages both ways (flow control on every hop): 20 × 100 kB down, 3 MB up.
        big = list(channel.unary_stream(method("ServerStream"))(b"20x100000", timeout=10))
        assert len(big) == 20 and all(len(m) == 100_000 + len(b"msg-%d" % i) for i, m in enumerate(big))
        assert len(channel.stream_unary(method("ClientStream"))(iter([b"q" * 100_000] * 30), timeout=10)) == 3_000_000
        # The app saw the gRPC metadata a client sends, through the proxy.
        keys = {k for k, _v in state.metadata[0]}
        assert "user-agent" in keys and "x-forwarded-for" in keys


def test_error_status_deadline_and_cancellation(app: tuple[int, EchoState], qps: list[QueueProxySubprocess]) -> None:
    port, state = app
    qp = start_qp(qps, port, CONTAINER_CONCURRENCY="1")
    with grpc.insecure_channel(f"127.0.0.1:{qp.port}") as channel:
        unary = channel.unary_unary(method("Unary"))
        with pytest.raises(grpc.RpcError) as info:
            unary(b"abort:NOT_FOUND", timeout=5)
        err: Any = info.value
        assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "aborted as asked"
        assert ("x-trailer", "done") in [(m.key, m.value) for m in err.trailing_metadata()]
        # The deadline travels as grpc-timeout and the client's cancellation (RST_STREAM) reaches
        # the app through the proxy; the breaker's only slot (cc=1) is free at once after it.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            unary(b"sleep:10", timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        started = time.monotonic()
        assert unary(b"next", timeout=5) == b"next"
        assert time.monotonic() - started < 1
        deadline = time.monotonic() + 5
        while state.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.cancelled >= 1


def test_streams_hold_breaker_slots_and_count_in_stats(
    app: tuple[int, EchoState], qps: list[QueueProxySubprocess]
) -> None:
    port, state = app
    qp = start_qp(qps, port, CONTAINER_CONCURRENCY="2")
    with grpc.insecure_channel(f"127.0.0.1:{qp.port}") as channel:
        bidi = channel.stream_stream(method("Bidi"))
        feeds = [Feed() for _ in range(3)]
        calls = []
        for feed in feeds[:2]:
            calls.append(bidi(iter(feed), timeout=20))
            feed.put(b"hi")
            assert next(calls[-1]) == b"hi"
        # Two streams execute (cc=2); the third waits in the breaker queue until one ends (§2.7).
        calls.append(bidi(iter(feeds[2]), timeout=20))
        feeds[2].put(b"hi")
        third: list[bytes] = []
        reader = threading.Thread(target=lambda: third.append(next(calls[2])))
        reader.start()
        time.sleep(2.2)
        assert not third and state.max_active == 2
        stat = decode_stat(urllib.request.urlopen(f"http://127.0.0.1:{qp.metrics_port}/metrics", timeout=5).read())
        # All three open streams are concurrency for the autoscaler, the queued one too (§2.9).
        assert stat.average_concurrent_requests == pytest.approx(3.0, abs=0.2)
        assert stat.request_count <= 3.0
        feeds[0].close()
        assert list(calls[0]) == []
        reader.join(5)
        assert third == [b"hi"]
        for feed in feeds[1:]:
            feed.close()
        assert list(calls[1]) == [] and list(calls[2]) == []
        assert state.max_active == 2


def test_drain_keeps_open_streams_and_exits_when_they_end(
    app: tuple[int, EchoState], qps: list[QueueProxySubprocess]
) -> None:
    port, _state = app
    qp = start_qp(qps, port, SLUICE_DRAIN_QUIET_PERIOD="0.5")
    with grpc.insecure_channel(f"127.0.0.1:{qp.port}") as channel:
        feed = Feed()
        replies = channel.stream_stream(method("Bidi"))(iter(feed), timeout=30)
        feed.put(b"before")
        assert next(replies) == b"before"
        qp.terminate()
        time.sleep(1.5)  # drained, servers shutting down: GOAWAY sent, the stream goes on
        assert qp.proc is not None and qp.proc.poll() is None
        feed.put(b"during")
        assert next(replies) == b"during"
        result: list[int | None] = []
        waiter = threading.Thread(target=lambda: result.append(qp.proc.wait(10) if qp.proc else None))
        waiter.start()
        feed.close()
        assert list(replies) == []
        waiter.join()
        assert result == [0]
