"""User-container readiness (CONTRACT.md §2.5) against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from proxy.readiness import (
    KUBE_PROBE_USER_AGENT,
    Probe,
    ReadinessProber,
    grpc_request_bytes,
    parse_readiness_probes,
)


def fast(probes: list[Probe]) -> ReadinessProber:
    """Shrunk aggressive-mode timings (the defaults are 50 ms / 100 ms / 10 s)."""
    return ReadinessProber(probes, aggressive_interval=0.01, aggressive_attempt_timeout=0.1, aggressive_deadline=1.0)


class Responder:
    """A tiny HTTP/1.1 server: records each request's head and counts connections."""

    def __init__(self, status: int | Callable[[], int] = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.connections = 0
        self.requests: list[list[str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> Responder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.requests.append(head.split("\r\n")[:-2])
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.status() if callable(self.status) else self.status
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def header(self, index: int, name: str) -> list[str]:
        prefix = name.lower() + ":"
        return [line.split(":", 1)[1].strip() for line in self.requests[index] if line.lower().startswith(prefix)]


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    r = await Responder().start()
    yield r
    await r.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_probe(port: int, **kw: object) -> Probe:
    return Probe(kind="http", host="127.0.0.1", port=port, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parsing


def test_parse_empty_means_always_ready() -> None:
    assert parse_readiness_probes("", multi=False) == []
    assert parse_readiness_probes("  ", multi=True) == []


def test_parse_typical_default_tcp_probe() -> None:
    [p] = parse_readiness_probes('{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}', False)
    assert p == Probe(kind="tcp", host="127.0.0.1", port=8080, success_threshold=1)
    assert p.aggressive


def test_parse_http_probe_all_fields() -> None:
    text = (
        '{"httpGet":{"path":"healthz","port":"8081","host":"127.0.0.1","scheme":"HTTPS",'
        '"httpHeaders":[{"name":"X-A","value":"1"},{"name":"X-B","value":""}]},'
        '"periodSeconds":5,"timeoutSeconds":2,"successThreshold":2,"failureThreshold":4}'
    )
    [p] = parse_readiness_probes(text, False)
    assert p == Probe(
        kind="http",
        host="127.0.0.1",
        port=8081,
        path="healthz",
        scheme="HTTPS",
        http_headers=(("X-A", "1"), ("X-B", "")),
        period_seconds=5,
        timeout_seconds=2,
        success_threshold=2,
        failure_threshold=4,
    )
    assert not p.aggressive


def test_parse_grpc_and_defaults() -> None:
    [p] = parse_readiness_probes('{"grpc":{"port":9000,"service":"svc"}}', False)
    assert (p.kind, p.host, p.port, p.grpc_service, p.success_threshold) == (
        "grpc",
        "127.0.0.1",
        9000,
        "svc",
        1,
    )


def test_parse_array_form() -> None:
    text = '[{"tcpSocket":{"port":8080}},{"httpGet":{"port":9000,"path":"/ready"},"periodSeconds":1}]'
    probes = parse_readiness_probes(text, True)
    assert [(p.kind, p.port) for p in probes] == [("tcp", 8080), ("http", 9000)]


@pytest.mark.parametrize(
    ("text", "multi", "fragment"),
    [
        ("{not json", False, "invalid JSON"),
        ('{"tcpSocket":{"port":8080}}', True, "JSON array"),
        ('[{"tcpSocket":{"port":8080}}]', False, "JSON object"),
        ('"x"', False, "JSON object"),
        ("{}", False, "exactly one of"),
        ('{"tcpSocket":{"port":1},"httpGet":{"port":1}}', False, "exactly one of"),
        ('{"exec":{"command":["true"]}}', False, "exec"),
        ('{"tcpSocket":{"port":"http"}}', False, "port"),
        ('{"tcpSocket":{"port":0}}', False, "port"),
        ('{"tcpSocket":{"port":8080},"periodSeconds":"1"}', False, "periodSeconds"),
        ('{"httpGet":{"port":1,"scheme":"FTP"}}', False, "scheme"),
        ('{"httpGet":{"port":1,"httpHeaders":[{"value":"x"}]}}', False, "httpHeaders[0]"),
        (
            '{"httpGet":{"port":1,"httpHeaders":[{"name":"X","value":"a\\r\\nB: c"}]}}',
            False,
            "httpHeaders[0]",
        ),
        ('[{"tcpSocket":{"port":1}}, 3]', True, "[1]"),
    ],
)
def test_parse_errors_name_the_variable(text: str, multi: bool, fragment: str) -> None:
    with pytest.raises(ValueError, match="SERVING_READINESS_PROBE") as info:
        parse_readiness_probes(text, multi)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- TCP


async def test_no_probes_is_ready() -> None:
    assert await ReadinessProber([]).check() is True


async def test_tcp_open_port_passes(responder: Responder) -> None:
    prober = ReadinessProber([Probe(kind="tcp", host="127.0.0.1", port=responder.port, period_seconds=1)])
    assert await prober.check() is True
    await asyncio.sleep(0.05)
    assert responder.connections == 1


async def test_tcp_closed_port_fails_once_when_not_aggressive() -> None:
    prober = ReadinessProber([Probe(kind="tcp", host="127.0.0.1", port=closed_port(), period_seconds=1)])
    start = time.monotonic()
    assert await prober.check() is False
    assert time.monotonic() - start < 0.5  # refused fails at once, no polling


async def test_tcp_closed_port_aggressive_polls_until_deadline() -> None:
    prober = ReadinessProber(
        [Probe(kind="tcp", host="127.0.0.1", port=closed_port())],
        aggressive_interval=0.02,
        aggressive_deadline=0.3,
    )
    start = time.monotonic()
    assert await prober.check() is False
    assert 0.25 <= time.monotonic() - start < 1.0


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    ("status", "ready"),
    [(200, True), (204, True), (302, True), (399, True), (404, False), (500, False), (503, False)],
)
async def test_http_status_ranges(responder: Responder, status: int, ready: bool) -> None:
    responder.status = status
    prober = ReadinessProber([http_probe(responder.port, period_seconds=1, timeout_seconds=1)])
    assert await prober.check() is ready
    assert responder.connections == 1  # exactly one attempt when periodSeconds > 0


async def test_http_request_shape(responder: Responder) -> None:
    probe = http_probe(
        responder.port,
        path="ready/x y?z",
        http_headers=(("X-Custom", "v1"), ("X-Custom", "v2"), ("User-Agent", "mine"), ("Host", "evil")),
        period_seconds=1,
        timeout_seconds=1,
    )
    assert await ReadinessProber([probe]).check()
    request_line = responder.requests[0][0]
    # Leading "/" added; Go's url.URL escapes the decoded path (space and "?").
    assert request_line == "GET /ready/x%20y%3Fz HTTP/1.1"
    assert responder.header(0, "User-Agent") == [KUBE_PROBE_USER_AGENT] == ["kube-probe//"]
    assert responder.header(0, "Host") == [f"127.0.0.1:{responder.port}"]
    assert responder.header(0, "X-Custom") == ["v1", "v2"]
    assert responder.header(0, "Connection") == ["close"]


async def test_http_empty_path_is_root(responder: Responder) -> None:
    assert await ReadinessProber([http_probe(responder.port, period_seconds=1)]).check()
    assert responder.requests[0][0] == "GET / HTTP/1.1"


async def test_http_closed_port_fails() -> None:
    assert await ReadinessProber([http_probe(closed_port(), period_seconds=1)]).check() is False


async def test_http_timeout_with_timeout_seconds() -> None:
    slow = await Responder(delay=3.0).start()
    try:
        start = time.monotonic()
        assert await ReadinessProber([http_probe(slow.port, period_seconds=1, timeout_seconds=1)]).check() is False
        assert 0.9 <= time.monotonic() - start < 2.0
    finally:
        await slow.stop()


async def test_http_aggressive_attempt_timeout() -> None:
    slow = await Responder(delay=0.5).start()
    try:
        prober = ReadinessProber(
            [http_probe(slow.port)],
            aggressive_interval=0.01,
            aggressive_attempt_timeout=0.05,
            aggressive_deadline=0.3,
        )
        assert await prober.check() is False
        assert slow.connections >= 3  # kept polling, each attempt cut short
    finally:
        await slow.stop()


async def test_server_that_becomes_ready_after_a_while(responder: Responder) -> None:
    ready_at = time.monotonic() + 0.2
    responder.status = lambda: 200 if time.monotonic() >= ready_at else 503
    prober = fast([http_probe(responder.port)])
    assert await prober.check() is True
    assert time.monotonic() >= ready_at
    assert responder.connections >= 5  # polled every 10 ms while not ready


async def test_listener_that_appears_after_a_while() -> None:
    port = closed_port()
    prober = fast([Probe(kind="tcp", host="127.0.0.1", port=port)])
    check = asyncio.ensure_future(prober.check())
    await asyncio.sleep(0.15)
    assert not check.done()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        assert await asyncio.wait_for(check, 2) is True
    finally:
        server.close()
        await server.wait_closed()


async def test_success_threshold_counts_consecutive_successes_across_calls(responder: Responder) -> None:
    script = iter([200, 200, 200, 200, 503, 200, 200, 200])
    responder.status = lambda: next(script)
    prober = fast([http_probe(responder.port, success_threshold=3)])
    assert await prober.check() is True
    assert responder.connections == 3
    assert prober.consecutive_successes(0) == 3
    # The counter persists: the next call passes on its first success.
    assert await prober.check() is True
    assert responder.connections == 4
    # A failure resets it: 503, then three more successes are needed.
    assert await prober.check() is True
    assert responder.connections == 8
    assert prober.consecutive_successes(0) == 3


async def test_single_flight_shares_one_attempt(responder: Responder) -> None:
    responder.delay = 0.1
    prober = ReadinessProber([http_probe(responder.port, period_seconds=1, timeout_seconds=1)])
    results = await asyncio.gather(*(prober.check() for _ in range(20)))
    assert results == [True] * 20
    assert responder.connections == 1
    # Once the run is over, a new call probes again.
    assert await prober.check() is True
    assert responder.connections == 2


async def test_single_flight_aggressive_run_is_shared(responder: Responder) -> None:
    script = iter([503, 503, 200])
    responder.status = lambda: next(script)
    prober = fast([http_probe(responder.port)])
    results = await asyncio.gather(*(prober.check() for _ in range(10)))
    assert results == [True] * 10
    assert responder.connections == 3  # one run: two failures then a success


async def test_cancelled_caller_does_not_cancel_the_shared_run(responder: Responder) -> None:
    responder.delay = 0.1
    prober = ReadinessProber([http_probe(responder.port, period_seconds=1, timeout_seconds=1)])
    first = asyncio.ensure_future(prober.check())
    second = asyncio.ensure_future(prober.check())
    await asyncio.sleep(0.02)
    first.cancel()
    assert await second is True
    assert responder.connections == 1


async def test_all_probes_must_pass_and_run_concurrently() -> None:
    a = await Responder(delay=0.2).start()
    b = await Responder(delay=0.2).start()
    try:
        both = [http_probe(a.port, period_seconds=1, timeout_seconds=1), http_probe(b.port, period_seconds=1)]
        start = time.monotonic()
        assert await ReadinessProber(both).check() is True
        assert time.monotonic() - start < 0.35  # concurrent, not 0.4 s
        b.status = 500
        assert await ReadinessProber(both).check() is False
        mixed = [
            http_probe(a.port, period_seconds=1),
            Probe(kind="tcp", host="127.0.0.1", port=closed_port(), period_seconds=1),
        ]
        assert await ReadinessProber(mixed).check() is False
    finally:
        await a.stop()
        await b.stop()


async def test_injected_clock_bounds_the_aggressive_deadline() -> None:
    # With the default 10 s deadline, a clock that jumps 60 s per reading ends the poll after
    # the first attempt: the deadline is measured on the injected clock.
    ticks = iter(range(0, 10_000, 60))
    prober = ReadinessProber(
        [Probe(kind="tcp", host="127.0.0.1", port=closed_port())], clock=lambda: float(next(ticks))
    )
    start = time.monotonic()
    assert await prober.check() is False
    assert time.monotonic() - start < 0.5


# --------------------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=user-container",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_probe_skips_verification(self_signed: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*self_signed)
    server = await Responder(status=200).start(ssl_ctx=ctx)
    try:
        assert await ReadinessProber([http_probe(server.port, scheme="HTTPS", period_seconds=1)]).check() is True
        assert server.requests[0][0] == "GET / HTTP/1.1"
        # Plain HTTP against the TLS port fails.
        assert await ReadinessProber([http_probe(server.port, period_seconds=1)]).check() is False
    finally:
        await server.stop()


# --------------------------------------------------------------------------- gRPC


class FakeGrpcHealth:
    """Just enough HTTP/2 server to answer one grpc.health.v1.Health/Check per connection."""

    def __init__(self, status: int | None) -> None:
        self.status = status  # None → trailers-only error reply (e.g. NOT_FOUND)
        self.received: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> FakeGrpcHealth:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @staticmethod
    def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.readexactly(24)
            assert data == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            writer.write(self.frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00\x64"))  # SETTINGS max streams
            while True:
                head = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
                data += head + payload
                if head[3] == 0x0 and head[4] & 0x1:  # DATA + END_STREAM: the request is complete
                    break
            self.received.append(data)
            writer.write(self.frame(0x1, 0x4, 1, b"\x88"))  # :status 200 (static index 8)
            if self.status is None:
                writer.write(self.frame(0x1, 0x5, 1, b"\x88"))  # trailers-only reply
            else:
                msg = b"\x08" + bytes((self.status,))
                # A padded DATA frame, to exercise padding removal.
                body = b"\x03" + b"\x00" + len(msg).to_bytes(4, "big") + msg + b"\x00\x00\x00"
                writer.write(self.frame(0x0, 0x8, 1, body))
                writer.write(self.frame(0x1, 0x5, 1, b"\x88"))
            await writer.drain()
            await asyncio.sleep(0.05)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("status", "ready"), [(1, True), (2, False), (0, False), (None, False)])
async def test_grpc_health_check(status: int | None, ready: bool) -> None:
    server = await FakeGrpcHealth(status).start()
    try:
        probe = Probe(kind="grpc", host="127.0.0.1", port=server.port, grpc_service="my.Svc", period_seconds=1)
        assert await ReadinessProber([probe]).check() is ready
        [sent] = server.received
        assert sent == grpc_request_bytes(probe)
        assert b"/grpc.health.v1.Health/Check" in sent and b"kube-probe//" in sent
        # The HealthCheckRequest message: field 1 = service name.
        assert sent.endswith(b"\x00\x00\x00\x00\x08\x0a\x06my.Svc")
    finally:
        await server.stop()


async def test_grpc_against_http1_server_fails(responder: Responder) -> None:
    probe = Probe(kind="grpc", host="127.0.0.1", port=responder.port, period_seconds=1, timeout_seconds=1)
    assert await ReadinessProber([probe]).check() is False


async def test_start_up_polls_every_10_ms_until_first_ready_then_at_the_aggressive_interval(
    responder: Responder,
) -> None:
    """Sluice's start-up window (docs/DIFFERENCES.md): before the app was first ready, within the
    window, the poll runs at `startup_interval`; once it was ready, at Go's interval again."""
    ready_at = time.monotonic() + 0.1
    responder.status = lambda: 200 if time.monotonic() >= ready_at else 503
    prober = ReadinessProber(
        [http_probe(responder.port)],
        aggressive_interval=0.25,
        aggressive_deadline=0.6,
        startup_interval=0.01,
        startup_window=5.0,
    )
    assert await prober.check() is True
    assert time.monotonic() - ready_at < 0.1  # a 250 ms poll would answer ~150 ms late
    assert responder.connections >= 5
    responder.status = 503
    before = responder.connections
    assert await prober.check() is False
    assert responder.connections - before <= 3  # 0, 250, 500 ms: no longer every 10 ms


async def test_start_up_window_ends_fast_polling_even_before_ready(responder: Responder) -> None:
    responder.status = 503
    prober = ReadinessProber(
        [http_probe(responder.port)],
        aggressive_interval=0.25,
        aggressive_deadline=0.6,
        startup_interval=0.01,
        startup_window=0.0,
    )
    assert await prober.check() is False
    assert responder.connections <= 3
