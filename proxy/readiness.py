"""User-container readiness check run by the queue-proxy (CONTRACT.md §2.5).

The reconciler removes the user container's own readiness probe and hands it to the QP as
`SERVING_READINESS_PROBE` (JSON of a core/v1 Probe, or an array of them when
`ENABLE_MULTI_CONTAINER_PROBES=true`). Kubelet then probes the QP (§1.3, §2.2) and the QP runs
these probes against the user container(s).

Only the stdlib is used: this module is imported by the sidecar entry point (§2.2: start-up time
and memory are paid in every revision pod).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["KUBE_PROBE_USER_AGENT", "Probe", "ReadinessProber", "parse_readiness_probes"]

log = logging.getLogger("proxy.readiness")

ENV_KEY = "SERVING_READINESS_PROBE"

# Go's `netheader.KubeProbeUAPrefix + KubeMajor + "/" + KubeMinor` with both left empty (§2.5).
KUBE_PROBE_USER_AGENT = "kube-probe//"

# `pkg/queue/readiness/probe.go`: retryInterval, aggressiveProbeTimeout, PollTimeout.
AGGRESSIVE_INTERVAL = 0.05
AGGRESSIVE_ATTEMPT_TIMEOUT = 0.1
AGGRESSIVE_DEADLINE = 10.0
# Sluice: while the app has never been ready, in the first second of the queue-proxy's life, the
# aggressive poll runs every 10 ms instead of 50 ms. That is when a cold start's request waits
# (issue 19): Go's 50 ms add 25 ms on average, up to 50, between the app listening and the
# request going through. A refused connect to a starting app costs it nothing; the extra probes
# are bounded (≤ 80 more per pod); afterwards Knative's 50 ms hold (docs/DIFFERENCES.md).
STARTUP_INTERVAL = 0.01
STARTUP_WINDOW = 1.0

# Go passes `TimeoutSeconds` straight through, and 0 would mean "no timeout" there; the
# reconciler raises it to >= 1 whenever periodSeconds > 0 (§2.5), so 0 only reaches us from a
# hand-written env. A probe without a deadline would wedge the single-flight run forever, so we
# use the Kubernetes default of 1 s instead.
_FALLBACK_TIMEOUT = 1.0

ProbeKind = Literal["http", "tcp", "grpc"]


@dataclass(frozen=True, slots=True)
class Probe:
    """One normalised core/v1 Probe (the reconciler already applied §2.5's defaults)."""

    kind: ProbeKind
    host: str
    port: int
    path: str = ""
    scheme: str = "HTTP"
    http_headers: tuple[tuple[str, str], ...] = ()
    grpc_service: str = ""
    period_seconds: int = 0
    timeout_seconds: int = 0
    success_threshold: int = 1
    failure_threshold: int = 0

    @property
    def aggressive(self) -> bool:
        """`IsAggressive()`: periodSeconds == 0 selects the 50 ms polling mode (§2.5)."""
        return self.period_seconds == 0


# --------------------------------------------------------------------------- parsing


def parse_readiness_probes(text: str, multi: bool) -> list[Probe]:
    """Decode `SERVING_READINESS_PROBE`; empty text means "always ready" (an empty list)."""
    if not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_KEY}: invalid JSON ({exc}): {text!r}") from None
    if multi:
        if not isinstance(raw, list):
            raise ValueError(
                f"{ENV_KEY}: expected a JSON array of probes (ENABLE_MULTI_CONTAINER_PROBES=true), "
                f"got {type(raw).__name__}: {text!r}"
            )
        items = raw
    else:
        items = [raw]
    return [_parse_probe(item, i if multi else None) for i, item in enumerate(items)]


def _parse_probe(raw: Any, index: int | None) -> Probe:
    where = ENV_KEY if index is None else f"{ENV_KEY}[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object (core/v1 Probe), got {type(raw).__name__}")
    handlers = [k for k in ("httpGet", "tcpSocket", "grpc", "exec") if raw.get(k) is not None]
    if len(handlers) != 1:
        raise ValueError(f"{where}: expected exactly one of httpGet, tcpSocket or grpc, got {handlers or 'none'}")
    handler = handlers[0]
    if handler == "exec":
        # The reconciler replaces exec probes with a tcpSocket probe before encoding (§2.5);
        # Go's QP would log "exec probe not supported" and never become ready.
        raise ValueError(f"{where}: exec probes are not supported (the reconciler turns them into tcpSocket)")
    body = raw[handler]
    hwhere = f"{where}.{handler}"
    if not isinstance(body, dict):
        raise ValueError(f"{hwhere}: expected a JSON object, got {type(body).__name__}")
    kind: ProbeKind = "http" if handler == "httpGet" else "tcp" if handler == "tcpSocket" else "grpc"
    scheme = (_str_field(body, "scheme", hwhere) or "HTTP").upper()
    if kind == "http" and scheme not in ("HTTP", "HTTPS"):
        raise ValueError(f"{hwhere}.scheme: expected HTTP or HTTPS, got {scheme!r}")
    return Probe(
        kind=kind,
        # Go dials ":port" (localhost) when host is empty; the reconciler always sets 127.0.0.1.
        host=_str_field(body, "host", hwhere) or "127.0.0.1",
        port=_port_field(body, hwhere),
        path=_str_field(body, "path", hwhere) if kind == "http" else "",
        scheme=scheme if kind == "http" else "HTTP",
        http_headers=_headers_field(body, hwhere) if kind == "http" else (),
        grpc_service=_str_field(body, "service", hwhere) if kind == "grpc" else "",
        period_seconds=_int_field(raw, "periodSeconds", where, 0),
        timeout_seconds=_int_field(raw, "timeoutSeconds", where, 0),
        success_threshold=_int_field(raw, "successThreshold", where, 1) or 1,
        failure_threshold=_int_field(raw, "failureThreshold", where, 0),
    )


def _headers_field(body: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    raw = body.get("httpHeaders") or []
    if not isinstance(raw, list):
        raise ValueError(f"{where}.httpHeaders: expected a JSON array, got {type(raw).__name__}")
    headers: list[tuple[str, str]] = []
    for i, h in enumerate(raw):
        name = h.get("name") if isinstance(h, dict) else None
        value = h.get("value", "") if isinstance(h, dict) else None
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"{where}.httpHeaders[{i}]: expected {{'name': str, 'value': str}}, got {h!r}")
        if not name or any(c in name for c in " \t\r\n:") or any(c in value for c in "\r\n"):
            raise ValueError(f"{where}.httpHeaders[{i}]: invalid header {name!r}: {value!r}")
        headers.append((name, value))
    return tuple(headers)


def _int_field(raw: dict[str, Any], key: str, where: str, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _str_field(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key) or ""
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _port_field(raw: dict[str, Any], where: str) -> int:
    # IntOrString in core/v1. The reconciler resolves named ports to numbers (§2.5), so only
    # a number (or a numeric string) can be probed here.
    value = raw.get("port")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}.port: expected a port number 1-65535, got {value!r}")
    return value


# --------------------------------------------------------------------------- one attempt


def _join_host_port(host: str, port: int) -> str:
    # Go's net.JoinHostPort: IPv6 literals are bracketed.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _request_target(path: str) -> str:
    # Go builds url.URL{Path: path}.String(): the path is the *decoded* form, so it is
    # percent-escaped (encodePath keeps unreserved and "$&+,/:;=@", escapes "?" and "%"),
    # a missing leading "/" is added and an empty path becomes "/".
    # Imported here, as ipaddress below: the default probe is TCP, and every pod pays for an
    # import at start (issue 19).
    from urllib.parse import quote

    escaped = quote(path, safe="$&+,/:;=@")
    if not escaped.startswith("/"):
        escaped = "/" + escaped
    return escaped


def _insecure_ssl_context() -> ssl.SSLContext:
    # Knative's prober transport sets InsecureSkipVerify, as kubelet does for HTTPS probes.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass


async def tcp_attempt(probe: Probe) -> None:
    """`health.TCPProbe`: connect, then close at once. Raises on failure."""
    _, writer = await asyncio.open_connection(probe.host, probe.port)
    await _close(writer)


async def http_attempt(probe: Probe) -> None:
    """`health.HTTPProbe` over HTTP/1.1. Raises unless the status is 200-399."""
    tls = probe.scheme == "HTTPS"
    reader, writer = await asyncio.open_connection(
        probe.host,
        probe.port,
        ssl=_insecure_ssl_context() if tls else None,
        # Go sets no SNI for IP literals; for names it sends the host.
        server_hostname=(None if _is_ip(probe.host) else probe.host) if tls else None,
    )
    try:
        lines = [
            f"GET {_request_target(probe.path)} HTTP/1.1",
            f"Host: {_join_host_port(probe.host, probe.port)}",
            f"User-Agent: {KUBE_PROBE_USER_AGENT}",
        ]
        # Go's Request.Write takes Host from the URL and User-Agent from the first value
        # (ours, added before the user's headers), so user-supplied Host/User-Agent are dropped.
        skip = ("host", "user-agent", "connection")
        lines += [f"{n}: {v}" for n, v in probe.http_headers if n.lower() not in skip]
        lines.append("Connection: close")  # the prober transport keeps no connections alive
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())  # Go writes strings as UTF-8 bytes
        await writer.drain()
        code = await _read_status(reader)
    finally:
        await _close(writer)
    if not 200 <= code < 400:
        raise ProbeError(f"HTTP probe did not respond Ready, got status code: {code}")


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _read_status(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ProbeError("connection closed before a response status line")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProbeError(f"malformed HTTP response {line[:80]!r}")
        code = int(parts[1])
        # Go's transport skips interim 1xx responses (but returns 101 Switching Protocols).
        if 100 <= code < 200 and code != 101:
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                del header
            continue
        return code


class ProbeError(Exception):
    """A probe attempt failed for a reason other than a socket error or a timeout."""


# --- gRPC: grpc.health.v1.Health/Check over cleartext HTTP/2 (prior knowledge), stdlib only.
# Only what one unary call needs: the request headers are sent as HPACK literals (no table,
# no Huffman), and the response headers are never decoded: success is decided by the
# HealthCheckResponse message in the DATA frame (status SERVING = 1), so a trailers-only
# error reply (no DATA) fails the probe, as it does in kubelet.

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_CONTINUATION = 0x9
_GRPC_SERVING = 1


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ProbeError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _health_status(message: bytes) -> int:
    """Field 1 (enum ServingStatus) of grpc.health.v1.HealthCheckResponse; 0 (UNKNOWN) if absent."""
    pos, status = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            size, pos = _read_varint(message, pos)
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProbeError(f"unsupported protobuf wire type {wire}")
    return status


def grpc_request_bytes(probe: Probe) -> bytes:
    """Everything the client sends for one Health/Check call (exposed for byte-level tests)."""
    from sluice.http.h2hpack import Encoder  # the engine's HPACK, loaded only for gRPC probes

    block = Encoder().encode(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/grpc.health.v1.Health/Check"),
            (b":authority", _join_host_port(probe.host, probe.port).encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", KUBE_PROBE_USER_AGENT.encode()),
        ]
    )
    service = probe.grpc_service.encode()
    msg = b"\x0a" + _varint(len(service)) + service if service else b""
    grpc_msg = b"\x00" + len(msg).to_bytes(4, "big") + msg
    return (
        _H2_PREFACE
        + _h2_frame(_SETTINGS, 0, 0, b"")
        + _h2_frame(_HEADERS, _END_HEADERS, 1, block)
        + _h2_frame(_DATA, _END_STREAM, 1, grpc_msg)
    )


async def _stream1_frames(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, what: str
) -> AsyncIterator[tuple[int, int, bytes]]:
    """Frames of stream 1 as (type, flags, payload), answering SETTINGS and PING on the way;
    a GOAWAY or a reset of stream 1 ends the probe (raised as ProbeError naming `what`)."""
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if ftype == _SETTINGS and not flags & _ACK:
            writer.write(_h2_frame(_SETTINGS, _ACK, 0, b""))
        elif ftype == _PING and not flags & _ACK:
            writer.write(_h2_frame(_PING, _ACK, 0, payload))
        elif ftype == _GOAWAY or (ftype == _RST_STREAM and stream == 1):
            raise ProbeError(f"{what}: stream reset by the server")
        elif stream == 1:
            if ftype in (_DATA, _HEADERS) and flags & _PADDED and payload:
                payload = payload[1 : len(payload) - payload[0]]
            if ftype == _HEADERS and flags & _PRIORITY:
                payload = payload[5:]
            yield ftype, flags, payload


async def grpc_attempt(probe: Probe) -> None:
    """kubelet-style gRPC health probe. Raises unless the service reports SERVING."""
    reader, writer = await asyncio.open_connection(probe.host, probe.port)
    try:
        writer.write(grpc_request_bytes(probe))
        await writer.drain()
        data = bytearray()
        async for ftype, flags, payload in _stream1_frames(reader, writer, "gRPC health check"):
            if ftype == _DATA:
                data += payload
                if len(data) >= 5:
                    if data[0] != 0:
                        raise ProbeError("gRPC health check: compressed responses are not supported")
                    size = int.from_bytes(data[1:5], "big")
                    if len(data) >= 5 + size:
                        status = _health_status(bytes(data[5 : 5 + size]))
                        if status != _GRPC_SERVING:
                            raise ProbeError(f"gRPC health check: service status {status}, want SERVING")
                        return
                if flags & _END_STREAM:
                    raise ProbeError("gRPC health check: truncated response message")
            elif ftype == _HEADERS and flags & _END_STREAM:
                raise ProbeError("gRPC health check: call failed (trailers-only response)")
    finally:
        await _close(writer)


async def h2c_http_attempt(probe: Probe) -> None:
    """The HTTP probe over prior-knowledge h2c (ENABLE_HTTP2_AUTO_DETECTION, §2.5). Raises
    unless the status is 200-399. HPACK is the engine's (`sluice.http.h2hpack`), imported only
    here so a default pod never loads it."""
    from sluice.http.h2hpack import Decoder, Encoder

    headers = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", _request_target(probe.path).encode()),
        (b":authority", _join_host_port(probe.host, probe.port).encode()),
        (b"user-agent", KUBE_PROBE_USER_AGENT.encode()),
    ]
    skip = ("host", "user-agent", "connection")
    headers += [(n.lower().encode(), v.encode()) for n, v in probe.http_headers if n.lower() not in skip]
    reader, writer = await asyncio.open_connection(probe.host, probe.port)
    try:
        writer.write(
            _H2_PREFACE
            + _h2_frame(_SETTINGS, 0, 0, b"")
            + _h2_frame(_HEADERS, _END_HEADERS | _END_STREAM, 1, Encoder().encode(headers))
        )
        await writer.drain()
        block = bytearray()
        async for ftype, flags, payload in _stream1_frames(reader, writer, "h2c probe"):
            if ftype in (_HEADERS, _CONTINUATION):
                block += payload
                if flags & _END_HEADERS:
                    fields = Decoder().decode(bytes(block))
                    code = int(next((v for k, v in fields if k == b":status"), b"0"))
                    if 100 <= code < 200:  # an interim response: the final one follows
                        block.clear()
                        continue
                    if not 200 <= code < 400:
                        raise ProbeError(f"HTTP probe did not respond Ready, got status code: {code}")
                    return
    finally:
        await _close(writer)


async def auto_http_attempt(probe: Probe) -> None:
    """§2.5 with ENABLE_HTTP2_AUTO_DETECTION: h2c first; if that does not yield 200-399,
    HTTP/1.1 (re-detected on every attempt, as Go does)."""
    try:
        await h2c_http_attempt(probe)
    except (OSError, EOFError, ValueError, ProbeError, asyncio.IncompleteReadError) as exc:
        log.debug("h2c probe of %s:%d failed (%r); trying HTTP/1.1", probe.host, probe.port, exc)
        await http_attempt(probe)


_ATTEMPTS: dict[str, Callable[[Probe], Awaitable[None]]] = {
    "tcp": tcp_attempt,
    "http": http_attempt,
    "grpc": grpc_attempt,
}


# --------------------------------------------------------------------------- the prober


class ReadinessProber:
    """The QP's readiness check over every probe of `SERVING_READINESS_PROBE` (§2.5).

    `check()` is single-flight: concurrent callers (kubelet probes arriving together) share one
    in-progress run and all receive its result. The run is shielded, so a caller that goes away
    does not cancel the run the others wait for.
    """

    def __init__(
        self,
        probes: Sequence[Probe],
        *,
        aggressive_interval: float = AGGRESSIVE_INTERVAL,
        aggressive_attempt_timeout: float = AGGRESSIVE_ATTEMPT_TIMEOUT,
        aggressive_deadline: float = AGGRESSIVE_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
        http2_auto_detection: bool = False,
        startup_interval: float = STARTUP_INTERVAL,
        startup_window: float = STARTUP_WINDOW,
    ) -> None:
        self.probes = tuple(probes)
        self._attempts = dict(_ATTEMPTS)
        if http2_auto_detection:
            self._attempts["http"] = auto_http_attempt
        self._interval = aggressive_interval
        self._attempt_timeout = aggressive_attempt_timeout
        self._deadline = aggressive_deadline
        self._clock = clock
        self._startup_interval = startup_interval
        self._startup_until = clock() + startup_window
        self._ever_ready = False
        # Consecutive successes per probe, kept across calls (Go's `Probe.count`).
        self._counts = [0] * len(self.probes)
        self._inflight: asyncio.Task[bool] | None = None

    def consecutive_successes(self, index: int) -> int:
        return self._counts[index]

    async def check(self) -> bool:
        if not self.probes:
            return True  # no SERVING_READINESS_PROBE → always ready (§2.5)
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run())
            self._inflight = task
            task.add_done_callback(self._clear)
        return await asyncio.shield(task)

    def _clear(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _run(self) -> bool:
        results = await asyncio.gather(*(self._probe(i, p) for i, p in enumerate(self.probes)))
        ready = all(results)
        self._ever_ready = self._ever_ready or ready
        return ready

    def _poll_interval(self) -> float:
        if not self._ever_ready and self._clock() < self._startup_until:
            return min(self._interval, self._startup_interval)
        return self._interval

    async def _probe(self, index: int, probe: Probe) -> bool:
        if not probe.aggressive:
            # Thresholds are left to kubelet, which probes the QP with the same ones (§2.5).
            timeout = float(probe.timeout_seconds) if probe.timeout_seconds > 0 else _FALLBACK_TIMEOUT
            return await self._attempt(probe, timeout)
        # wait.PollImmediate(50ms, 10s): attempt now, then every interval until the deadline.
        deadline = self._clock() + self._deadline
        while True:
            if await self._attempt(probe, self._attempt_timeout):
                self._counts[index] += 1
                if self._counts[index] >= probe.success_threshold:
                    return True
            else:
                self._counts[index] = 0
            interval = self._poll_interval()
            if self._clock() + interval > deadline:
                log.info("%s probe on port %d not ready in %.1fs", probe.kind, probe.port, self._deadline)
                return False
            await asyncio.sleep(interval)

    async def _attempt(self, probe: Probe, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                await self._attempts[probe.kind](probe)
        except (OSError, EOFError, ValueError, ProbeError, TimeoutError) as exc:
            log.debug("%s probe %s:%d failed: %r", probe.kind, probe.host, probe.port, exc)
            return False
        return True
