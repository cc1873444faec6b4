"""Test helpers: real sockets on 127.0.0.1, a byte-level HTTP client, upstream apps,
and queue-proxies (in-process or as a real subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]


class _Collector:
    def __init__(self, head_requests: list[bool]) -> None:
        self.responses: list[Response] = []
        self.current: Response | None = None
        self.head_requests = head_requests
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        target = self.current.trailers if self.current.status else self.current.headers
        target.append((name.decode(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()
        if 100 <= self.current.status < 200 and self.current.status != 101:
            self.responses.append(self.current)
            self.current.complete = True
            return
        if self.head_requests and self.head_requests[len([r for r in self.responses if r.status >= 200])]:
            self.current.complete = True
            self.responses.append(self.current)
            self.current = None
            # llhttp would wait for a body: the caller resets the parser.
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        cur = self.current
        if cur is not None and not cur.complete:
            cur.complete = True
            self.responses.append(cur)
        self.current = None


class _HeadDone(Exception):
    pass


class RawConnection:
    """A client connection that writes raw bytes and parses responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_responses(
        self, count: int, head_requests: list[bool] | None = None, timeout: float = 10.0
    ) -> list[Response]:
        """Reads until `count` final (non-1xx) responses are complete, or EOF."""
        collector = _Collector(head_requests or [False] * count)

        def finals() -> int:
            return len([r for r in collector.responses if r.status >= 200])

        async def pump() -> None:
            while finals() < count:
                data = await self.reader.read(65536)
                if not data:
                    if collector.current is not None and collector.current.status:
                        collector.responses.append(collector.current)  # close-delimited body
                        collector.current = None
                    return
                try:
                    collector.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    if isinstance(exc.__context__, _HeadDone):
                        collector.parser = httptools.HttpResponseParser(collector)
                        continue
                    raise
                except httptools.HttpParserUpgrade:
                    return

        await asyncio.wait_for(pump(), timeout)
        return collector.responses

    async def request(self, data: bytes, head: bool = False, timeout: float = 10.0) -> Response:
        await self.send(data)
        responses = await self.read_responses(1, [head], timeout)
        finals = [r for r in responses if r.status >= 200]
        assert finals, f"no response (got {responses})"
        return finals[0]

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (ConnectionError, TimeoutError):
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def http_request(port: int, data: bytes, head: bool = False, timeout: float = 10.0) -> Response:
    conn = await RawConnection.open(port)
    try:
        return await conn.request(data, head, timeout)
    finally:
        await conn.close()


def get(path: str = "/", headers: dict[str, str] | None = None, host: str = "example.com") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- upstream apps --------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """An upstream whose connections are handled by raw stream code (byte control)."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


async def read_request_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0]
    pairs = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            pairs.append((k, v.strip()))
    return request_line, {k.lower(): v for k, v in pairs}, pairs


# ---- queue-proxy processes ------------------------------------------------------


def qp_env(user_port: int, **overrides: str) -> dict[str, str]:
    env = {
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-abc",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": "0",
        "QUEUE_SERVING_TLS_PORT": "0",
        "USER_PORT": str(user_port),
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SLUICE_BIND_HOST": "127.0.0.1",
        "SLUICE_ADMIN_PORT": "0",
        "SLUICE_METRICS_PORT": "0",
    }
    env.update(overrides)
    return env


class _PortTaken(RuntimeError):
    pass


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True


class QueueProxySubprocess:
    """`python -m proxy` as a real process on free ports."""

    def __init__(self, user_port: int, **overrides: str) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.metrics_port = free_port()
        env = dict(os.environ)
        env.update(
            qp_env(
                user_port,
                QUEUE_SERVING_PORT=str(self.port),
                QUEUE_SERVING_TLS_PORT=str(free_port()),
                SLUICE_ADMIN_PORT=str(self.admin_port),
                SLUICE_METRICS_PORT=str(self.metrics_port),
                PYTHONDONTWRITEBYTECODE="1",
            )
        )
        env.update(overrides)
        self.env = env
        # The ports start() waits for are the ones the process is told to use, overrides included.
        self.port = int(env["QUEUE_SERVING_PORT"])
        self.admin_port = int(env["SLUICE_ADMIN_PORT"])
        self.metrics_port = int(env["SLUICE_METRICS_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> QueueProxySubprocess:
        """Starts and waits until the serving port accepts. A free port can be taken by
        another process between `free_port()` and the bind: then retry on fresh ports."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except _PortTaken:
                if attempt == attempts - 1:
                    raise
                self._reallocate()
        raise AssertionError("unreachable")

    def _reallocate(self) -> None:
        self.port, self.admin_port, self.metrics_port = free_port(), free_port(), free_port()
        self.env.update(
            QUEUE_SERVING_PORT=str(self.port),
            QUEUE_SERVING_TLS_PORT=str(free_port()),
            SLUICE_ADMIN_PORT=str(self.admin_port),
            SLUICE_METRICS_PORT=str(self.metrics_port),
        )

    def _start_once(self) -> QueueProxySubprocess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                if "address already in use" in err:
                    raise _PortTaken(err)
                raise RuntimeError(f"queue-proxy exited: {err}")
            # Every listener, not just serving: the admin and stats ports bind after it,
            # and a test that talks to /wait-for-drain first would race them.
            if all(_accepts(port) for port in (self.port, self.admin_port, self.metrics_port)):
                return self
            time.sleep(0.02)
        raise RuntimeError("queue-proxy did not start listening")

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        _out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err.decode()

    def wait(self, timeout: float) -> tuple[int, str]:
        assert self.proc is not None
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode()
