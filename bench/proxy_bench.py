#!/usr/bin/env python3
"""Reproducible queue-proxy benchmark (issue 2).

Starts nginx (`return 200 "ok"`) as the user container and measures `wrk -t1 -cN --latency`
against, in one run:

* ``direct``       the user container itself (the floor every proxy adds latency to);
* ``nginx``        a second nginx as reverse proxy with upstream keep-alive (the fair reference);
* ``sluice-ccN``   the Sluice queue-proxy (`python -m proxy`) with CONTAINER_CONCURRENCY=N;
                   ``sluice-ccN-metrics`` with user metrics on (Prometheus, §2.10), and
                   ``sluice-ccN-trace0`` with tracing on at sampling rate 0 (OTLP to a closed
                   port: nothing is sampled, every request still propagates a context): what
                   each costs per request.

The proxy under test is pinned to one core (``taskset -c 0``), wrk and the upstream nginx to
the other (``taskset -c 1``), so req/s measures the proxy's single-core throughput and the load
generator never steals its CPU. Everything listens on 127.0.0.1 only; every process started here
is stopped in a ``finally`` (also on Ctrl-C / SIGTERM) and every wrk run is bounded.

Stdlib only: it runs from the project venv but imports nothing from the project. See
bench/README.md for the columns and the targets they are checked against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
DEFAULT_TARGETS = ("direct", "nginx", "sluice-cc0", "sluice-cc10")
APT_INSTALL = "apt-get install -y --no-install-recommends nginx wrk"
APT_LOG = Path("/tmp/apt.log")

# Targets of issue 2, checked in the "Derived" section.
TARGET_RPS_RATIO = 0.6  # sluice c=50 req/s >= 0.6 x nginx-as-proxy c=50 req/s
TARGET_ADDED_P50_RATIO = 2.0  # sluice added p50 at c=1 <= 2 x nginx's added p50
TARGET_RSS_IDLE_MB = 30.0
TARGET_RSS_LONG_MB = 45.0
TARGET_READY_MS = 300.0

# kubelet-style readiness probe of the QP main port (CONTRACT.md §1.3, §2.2).
PROBE_HEADERS = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
PROBE_INTERVAL_S = 0.005

_TARGET_RE = re.compile(r"^sluice-cc(\d+)(-metrics|-trace0)?$")

# OBSERVABILITY_CONFIG of the telemetry variants (the metrics port is filled in per run).
TELEMETRY_VARIANTS = {
    "-metrics": '{{"requestMetrics":{{"protocol":"prometheus","endpoint":"127.0.0.1:{port}"}}}}',
    "-trace0": '{{"tracing":{{"protocol":"http/protobuf","endpoint":"127.0.0.1:{port}","samplingRate":0}}}}',
}


class BenchError(Exception):
    """A failure that ends the run with a message (and exit status 1)."""


# ---------------------------------------------------------------------------------------------
# Parsing: wrk output, /proc/<pid>/stat, /proc/<pid>/status, durations. Pure, unit-tested.
# ---------------------------------------------------------------------------------------------

_TIME_UNITS_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0, "h": 3_600_000_000.0}
_NUM_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"
_RE_PCT = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+" + _NUM_TIME + r"\s*$", re.MULTILINE)
_RE_REQUESTS = re.compile(r"^\s*([0-9]+) requests in " + _NUM_TIME + r",", re.MULTILINE)
_RE_RPS = re.compile(r"^Requests/sec:\s+([0-9]+(?:\.[0-9]+)?)\s*$", re.MULTILINE)
_RE_SOCKET = re.compile(
    r"^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)\s*$",
    re.MULTILINE,
)
_RE_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses: ([0-9]+)\s*$", re.MULTILINE)


def parse_wrk_time_us(value: str, unit: str) -> float:
    """wrk's human time (`123.45us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds."""
    try:
        return float(value) * _TIME_UNITS_US[unit]
    except KeyError:
        raise ValueError(f"unknown wrk time unit {unit!r}") from None


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    req_per_s: float
    p50_us: float
    p99_us: float
    non2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    def error_text(self) -> str:
        """`0`, or the total with its parts, e.g. `12 (non-2xx 2, read 10)`."""
        if self.errors == 0:
            return "0"
        parts = [
            f"{name} {n}"
            for name, n in (
                ("non-2xx", self.non2xx),
                ("connect", self.connect_errors),
                ("read", self.read_errors),
                ("write", self.write_errors),
                ("timeout", self.timeouts),
            )
            if n
        ]
        return f"{self.errors} ({', '.join(parts)})"


def parse_wrk_output(text: str) -> WrkResult:
    """Parse `wrk --latency` stdout. Raises ValueError naming what is missing."""
    pct: dict[str, float] = {}
    for m in _RE_PCT.finditer(text):
        pct[m.group(1)] = parse_wrk_time_us(m.group(2), m.group(3))
    req = _RE_REQUESTS.search(text)
    rps = _RE_RPS.search(text)
    missing = [
        name
        for name, ok in (
            ("latency distribution 50%", "50" in pct),
            ("latency distribution 99%", "99" in pct),
            ("'N requests in T' line", req is not None),
            ("'Requests/sec:' line", rps is not None),
        )
        if not ok
    ]
    if missing or req is None or rps is None:
        raise ValueError(f"wrk output lacks {', '.join(missing)} (was --latency passed?):\n{text}")
    sock = _RE_SOCKET.search(text)
    non2xx = _RE_NON2XX.search(text)
    conn_e, read_e, write_e, tmo = (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0)
    return WrkResult(
        requests=int(req.group(1)),
        duration_s=parse_wrk_time_us(req.group(2), req.group(3)) / 1e6,
        req_per_s=float(rps.group(1)),
        p50_us=pct["50"],
        p99_us=pct["99"],
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        connect_errors=conn_e,
        read_errors=read_e,
        write_errors=write_e,
        timeouts=tmo,
    )


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this runner uses (proc(5)); times in clock ticks."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line.

    `comm` (field 2) is in parentheses and may itself contain spaces and `)`, so split at the
    first `(` and the *last* `)`. After it: state (3), ppid (4), ... utime (14), stime (15).
    utime/stime cover all threads of the process.
    """
    open_i = text.find("(")
    close_i = text.rfind(")")
    if open_i < 0 or close_i < open_i:
        raise ValueError(f"not a /proc/<pid>/stat line: {text!r}")
    rest = text[close_i + 1 :].split()
    if len(rest) < 13:
        raise ValueError(f"/proc/<pid>/stat line has too few fields: {text!r}")
    return ProcStat(
        pid=int(text[:open_i]),
        comm=text[open_i + 1 : close_i],
        state=rest[0],
        ppid=int(rest[1]),
        utime=int(rest[11]),
        stime=int(rest[12]),
    )


def parse_vmrss_kb(status_text: str) -> int:
    """VmRSS in kB from /proc/<pid>/status (`VmRSS:\\t   12345 kB`)."""
    m = re.search(r"^VmRSS:\s+([0-9]+)\s+kB\s*$", status_text, re.MULTILINE)
    if m is None:
        raise ValueError("no VmRSS line in /proc/<pid>/status (a zombie or kernel thread?)")
    return int(m.group(1))


def parse_duration_s(text: str) -> int:
    """`10`, `10s`, `2m`, `1h` -> whole seconds (wrk's -d only takes whole units)."""
    m = re.fullmatch(r"\s*([0-9]+)\s*(s|m|h)?\s*", text)
    if m is None:
        raise ValueError(f"bad duration {text!r}: use whole seconds like 10s, 2m")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def parse_connections(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad --connections {text!r}: use e.g. 1,10,50") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"bad --connections {text!r}: each must be >= 1")
    return values


def parse_targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in targets if t not in ("direct", "nginx") and not _TARGET_RE.match(t)]
    if not targets or bad:
        raise ValueError(
            f"bad --targets {text!r}: known are direct, nginx, sluice-cc<N>[-metrics|-trace0] (e.g. sluice-cc10)"
        )
    if len(set(targets)) != len(targets):
        raise ValueError(f"bad --targets {text!r}: a target is listed twice")
    return targets


def sluice_cc(target: str) -> int | None:
    m = _TARGET_RE.match(target)
    return int(m.group(1)) if m else None


def telemetry_config(target: str, port: int) -> str | None:
    """The OBSERVABILITY_CONFIG of a `-metrics` / `-trace0` target, None for the default."""
    m = _TARGET_RE.match(target)
    variant = m.group(2) if m else None
    return TELEMETRY_VARIANTS[variant].format(port=port) if variant else None


def cpu_model(cpuinfo_text: str) -> str:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
            return value.strip()
    return "unknown"


# ---------------------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------------------


def _read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError):
        return None


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants (a master/worker nginx or a QP that forks stays covered)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _read_stat(int(entry.name))
            if st is not None:
                children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(root: int) -> int:
    return sum(st.cpu_ticks for pid in process_tree(root) if (st := _read_stat(pid)) is not None)


def rss_kb(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        try:
            total += parse_vmrss_kb(Path(f"/proc/{pid}/status").read_text())
        except (OSError, ValueError):
            pass
    return total


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


class Processes:
    """Every long-running process this runner starts; `stop_all()` runs in a `finally`.

    Each child is a session leader (`start_new_session`) so a Ctrl-C in the terminal reaches
    only the runner, which then stops the children in order, and so its process group holds
    exactly what it (and its own children) started.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def spawn(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self._workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self._workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        for i, (_, p, log) in enumerate(self._procs):
            if p is proc:
                log.close()
                del self._procs[i]
                break

    def stop_all(self) -> None:
        for _, proc, _ in reversed(list(self._procs)):
            self.stop(proc)


@contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt, so the `finally` that stops children runs
    (SIGINT explicitly too: a shell starts background jobs with SIGINT ignored)."""

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


# ---------------------------------------------------------------------------------------------
# Tools, nginx, the queue-proxy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    wrk: str
    taskset: str


def find_tools() -> Tools:
    """nginx and wrk from Debian; nginx lives in /usr/sbin, often not on a user's PATH."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = {name: shutil.which(name, path=path) for name in ("nginx", "wrk", "taskset")}
    missing = [name for name, where in found.items() if where is None]
    if missing:
        lines = [f"proxy_bench: missing {', '.join(missing)}."]
        if APT_LOG.exists():
            tail = APT_LOG.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            if tail[0].strip() != "done":
                lines.append(f"An apt install seems to be running ({APT_LOG} does not end with 'done'): wait.")
        sudo = "" if os.geteuid() == 0 else "sudo "
        lines.append(f"Install them with:\n    {sudo}{APT_INSTALL}")
        if "taskset" in missing:
            lines.append("(taskset is in util-linux.)")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2)
    return Tools(nginx=found["nginx"] or "", wrk=found["wrk"] or "", taskset=found["taskset"] or "")


def nginx_config(workdir: Path, name: str, port: int, upstream_port: int | None) -> str:
    """One nginx process (`master_process off`: no master/worker split, so the pid we pin and
    sample is the one serving), all state under `workdir`, no access log. With `upstream_port`
    it is the reference reverse proxy: HTTP/1.1 upstream keep-alive, like the QP's pool."""
    d = workdir / name
    if upstream_port is None:
        location = 'return 200 "ok";'
        upstream = ""
    else:
        location = "\n            ".join(
            [
                "proxy_pass http://user_container;",
                "proxy_http_version 1.1;",
                'proxy_set_header Connection "";',
            ]
        )
        upstream = (
            "    upstream user_container {\n"
            f"        server {LOOPBACK}:{upstream_port};\n"
            "        keepalive 64;\n"
            "        keepalive_requests 1000000;\n"
            "    }\n"
        )
    return f"""# generated by bench/proxy_bench.py
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # wrk and the proxies keep their connections for the whole run (nginx's default is 1000).
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{upstream}    server {{
        listen {LOOPBACK}:{port};
        location / {{
            {location}
        }}
    }}
}}
"""


def http_get(port: int, headers: Mapping[str, str], timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    started: float,
    timeout_s: float,
    headers: Mapping[str, str],
    expect_body: bytes | None,
) -> float:
    """Poll GET / every 5 ms until 200 (and `expect_body`); milliseconds since `started`."""
    deadline = started + timeout_s
    last = "no answer"
    while True:
        if proc.poll() is not None:
            raise BenchError(f"process exited with status {proc.returncode} before it was ready ({last})")
        try:
            status, body = http_get(port, headers, timeout=0.5)
            if status == 200 and (expect_body is None or body == expect_body):
                return (time.monotonic() - started) * 1000.0
            last = f"status {status}, body {body[:80]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise BenchError(f"not ready within {timeout_s:g}s on port {port} (last: {last})")
        time.sleep(PROBE_INTERVAL_S)


@dataclass(slots=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ready_ms: float


def start_nginx(
    procs: Processes, tools: Tools, workdir: Path, name: str, cpu: int, upstream_port: int | None
) -> Server:
    port = free_port()
    d = workdir / name
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(nginx_config(workdir, name, port, upstream_port))
    argv = [
        tools.taskset,
        "-c",
        str(cpu),
        tools.nginx,
        "-p",
        f"{d}/",
        "-e",
        str(d / "error.log"),
        "-c",
        str(conf),
    ]
    started = time.monotonic()
    proc = procs.spawn(name, argv)
    try:
        ready = wait_ready(proc, port, started, 5.0, {}, b"ok")
    except BenchError as exc:
        err = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() else ""
        raise BenchError(f"{name}: {exc}\n{procs.log_tail(name)}\n{err}") from None
    return Server(name, proc, port, ready)


def qp_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def check_qp_importable(python: str) -> None:
    out = subprocess.run(
        [python, "-c", "import proxy.__main__"],
        cwd=REPO,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-3:])
        raise BenchError(
            f"the Sluice queue-proxy is not available ({python} -c 'import proxy.__main__' failed):\n"
            f"{tail}\nRun without it: --targets direct,nginx"
        )


def qp_env(upstream_port: int, cc: int, ports: Sequence[int]) -> dict[str, str]:
    """CONTRACT.md §2.1 as the reconciler would set it, plus the Sluice port overrides.

    Built from scratch (only PATH/HOME/locale are inherited) so stray SERVING_* or SLUICE_*
    variables in the caller's shell cannot change what is measured.
    """
    serving, tls, admin, metrics = ports
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(
        {
            "SERVING_NAMESPACE": "default",
            "SERVING_CONFIGURATION": "bench",
            "SERVING_REVISION": "bench-00001",
            "SERVING_POD": "bench-pod",
            "SERVING_POD_IP": LOOPBACK,
            "QUEUE_SERVING_PORT": str(serving),
            "QUEUE_SERVING_TLS_PORT": str(tls),
            "USER_PORT": str(upstream_port),
            "CONTAINER_CONCURRENCY": str(cc),
            "REVISION_TIMEOUT_SECONDS": "300",
            "SERVING_LOGGING_CONFIG": "",
            "SERVING_LOGGING_LEVEL": "",
            "SERVING_READINESS_PROBE": (
                f'{{"tcpSocket":{{"port":{upstream_port},"host":"{LOOPBACK}"}},"successThreshold":1}}'
            ),
            "SLUICE_ADMIN_PORT": str(admin),
            "SLUICE_METRICS_PORT": str(metrics),
            "SLUICE_BIND_HOST": LOOPBACK,
            # Shutdown only: no 30 s drain wait on SIGTERM between targets (§2.11 is not measured here).
            "SLUICE_DRAIN_QUIET_PERIOD": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def start_qp(
    procs: Processes,
    tools: Tools,
    python: str,
    name: str,
    cpu: int,
    upstream_port: int,
    cc: int,
    ready_timeout: float,
) -> Server:
    ports = free_ports(5)
    env = qp_env(upstream_port, cc, ports[:4])
    observability = telemetry_config(name, ports[4])
    if observability is not None:
        env["OBSERVABILITY_CONFIG"] = observability
    argv = [tools.taskset, "-c", str(cpu), python, "-m", "proxy"]
    started = time.monotonic()
    proc = procs.spawn(name, argv, env=env, cwd=REPO)
    try:
        ready = wait_ready(proc, ports[0], started, ready_timeout, PROBE_HEADERS, b"queue")
        status, body = http_get(ports[0], {})
        if status != 200 or body != b"ok":
            raise BenchError(f"GET / through the QP gave {status} {body[:80]!r}, expected 200 'ok'")
    except BenchError as exc:
        raise BenchError(f"{name}: {exc}\n--- {name} log tail ---\n{procs.log_tail(name)}") from None
    return Server(name, proc, ports[0], ready)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    target: str
    connections: int
    wrk: WrkResult
    rss_idle_kb: int
    rss_after_kb: int
    cpu_us_per_req: float


@dataclass(frozen=True, slots=True)
class LongRun:
    target: str
    requested: int
    requests: int
    connections: int
    seconds: float
    errors: int
    rss_kb: int


@dataclass(slots=True)
class TargetReport:
    target: str
    ready_ms: float
    rss_idle_kb: int
    rows: list[Row] = field(default_factory=list)
    long: LongRun | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: int
    warmup_s: int
    connections: list[int]
    targets: list[str]
    long: int
    long_connections: int
    long_max_s: int
    proxy_cpu: int
    load_cpu: int
    python: str
    ready_timeout_s: float


def wrk_argv(tools: Tools, cpu: int, connections: int, seconds: int, port: int) -> list[str]:
    return [
        tools.taskset, "-c", str(cpu), tools.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
        f"http://{LOOPBACK}:{port}/",
    ]  # fmt: skip


def run_wrk(tools: Tools, cpu: int, connections: int, seconds: int, port: int) -> WrkResult:
    argv = wrk_argv(tools, cpu, connections, seconds, port)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{shlex.join(argv)} did not finish within {seconds + 30}s") from None
    finally:
        # Also on Ctrl-C: never leave a wrk (or its zombie) behind.
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    if proc.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed ({proc.returncode}):\n{stdout}{stderr}")
    try:
        return parse_wrk_output(stdout)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def cpu_us_per_request(ticks: int, requests: int, clk_tck: int) -> float:
    return ticks * 1_000_000.0 / clk_tck / requests if requests else float("nan")


def measure(tools: Tools, s: Settings, target: str, server: Server, sampled_pid: int, report: TargetReport) -> None:
    clk_tck = os.sysconf("SC_CLK_TCK")
    for c in s.connections:
        if s.warmup_s:
            run_wrk(tools, s.load_cpu, c, s.warmup_s, server.port)
        before = cpu_ticks(sampled_pid)
        result = run_wrk(tools, s.load_cpu, c, s.duration_s, server.port)
        ticks = cpu_ticks(sampled_pid) - before
        row = Row(
            target=target,
            connections=c,
            wrk=result,
            rss_idle_kb=report.rss_idle_kb,
            rss_after_kb=rss_kb(sampled_pid),
            cpu_us_per_req=cpu_us_per_request(ticks, result.requests, clk_tck),
        )
        report.rows.append(row)
        print(f"  {format_row(row)}", flush=True)


def long_run(tools: Tools, s: Settings, target: str, server: Server, rate: float) -> LongRun:
    """wrk in chunks sized from the observed rate until `s.long` requests were answered (wrk
    has no request-count option, and a Lua `response()` hook would slow the client down; plain
    chunks keep the client's cost identical to the table's runs). Bounded by --long-max.
    `rate` is the req/s measured at this connection count in the table (a first guess)."""
    total, errors, seconds = 0, 0, 0.0
    rate = max(rate, 100.0)
    deadline = time.monotonic() + s.long_max_s
    while total < s.long:
        left_s = deadline - time.monotonic()
        if left_s < 1:
            break
        chunk = int(min(max(math.ceil((s.long - total) / rate), 1), 120, left_s))
        result = run_wrk(tools, s.load_cpu, s.long_connections, chunk, server.port)
        total += result.requests
        errors += result.errors
        seconds += result.duration_s
        rate = max(result.req_per_s, 100.0)
    return LongRun(target, s.long, total, s.long_connections, seconds, errors, rss_kb(server.proc.pid))


def bench_target(
    procs: Processes,
    tools: Tools,
    s: Settings,
    workdir: Path,
    upstream: Server,
    target: str,
    reports: dict[str, TargetReport],
) -> None:
    """Measure one target; its report goes into `reports` row by row (kept if a later cell fails)."""
    print(f"== {target}", flush=True)
    server: Server
    if target == "direct":
        server = upstream
    elif target == "nginx":
        server = start_nginx(procs, tools, workdir, "nginx-proxy", s.proxy_cpu, upstream.port)
    else:
        cc = sluice_cc(target)
        assert cc is not None
        server = start_qp(procs, tools, s.python, target, s.proxy_cpu, upstream.port, cc, s.ready_timeout_s)
    try:
        # For `direct` the sampled process is the upstream nginx itself.
        sampled = server.proc.pid
        time.sleep(0.2)  # let start-up allocations settle before "idle"
        report = reports[target] = TargetReport(target, server.ready_ms, rss_kb(sampled))
        print(f"  ready in {server.ready_ms:.0f} ms, idle RSS {report.rss_idle_kb / 1024:.1f} MB", flush=True)
        measure(tools, s, target, server, sampled, report)
        if s.long and sluice_cc(target) is not None:
            print(f"  long run: {s.long:,} requests at c={s.long_connections} ...", flush=True)
            seed = _row({target: report}, target, s.long_connections) or report.rows[-1]
            report.long = long_run(tools, s, target, server, seed.wrk.req_per_s)
            print(
                f"  RSS after {report.long.requests:,} requests: {report.long.rss_kb / 1024:.1f} MB",
                flush=True,
            )
    finally:
        if server is not upstream:
            t0 = time.monotonic()
            procs.stop(server.proc)
            how = "SIGKILL after 3 s" if server.proc.returncode == -signal.SIGKILL else "SIGTERM"
            print(f"  stopped in {time.monotonic() - t0:.2f} s ({how})", flush=True)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

TABLE_HEADER = (
    "| target | c | req/s | p50 (ms) | p99 (ms) | errors | RSS idle (MB) | RSS after (MB) | CPU µs/req |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def format_row(row: Row) -> str:
    w = row.wrk
    return (
        f"| {row.target} | {row.connections} | {w.req_per_s:,.0f} "
        f"| {w.p50_us / 1000:.3f} | {w.p99_us / 1000:.3f} "
        f"| {w.error_text()} | {row.rss_idle_kb / 1024:.1f} | {row.rss_after_kb / 1024:.1f} "
        f"| {row.cpu_us_per_req:.1f} |"
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _row(reports: Mapping[str, TargetReport], target: str, c: int) -> Row | None:
    rep = reports.get(target)
    return next((r for r in rep.rows if r.connections == c), None) if rep else None


def derived_lines(reports: Mapping[str, TargetReport]) -> list[str]:
    """The issue-2 targets, each with PASS/MISS (or n/a when an input was not measured)."""
    lines: list[str] = []
    sluices = [t for t in reports if sluice_cc(t) is not None]
    nginx50 = _row(reports, "nginx", 50)
    direct1, nginx1 = _row(reports, "direct", 1), _row(reports, "nginx", 1)
    nginx_added = nginx1.wrk.p50_us - direct1.wrk.p50_us if nginx1 and direct1 else None
    if nginx_added is not None:
        lines.append(f"- nginx-as-proxy added p50 at c=1: {nginx_added:.0f} µs (nginx p50 - direct p50)")
    for t in sluices:
        s50 = _row(reports, t, 50)
        if s50 and nginx50:
            ratio = s50.wrk.req_per_s / nginx50.wrk.req_per_s
            lines.append(
                f"- {t} c=50 req/s ÷ nginx c=50 req/s: {s50.wrk.req_per_s:,.0f}"
                f" / {nginx50.wrk.req_per_s:,.0f} = {ratio:.2f}"
                f" (target ≥ {TARGET_RPS_RATIO}) {_verdict(ratio >= TARGET_RPS_RATIO)}"
            )
        else:
            lines.append(f"- {t} c=50 req/s ÷ nginx c=50 req/s: n/a (needs targets nginx and c=50)")
        s1 = _row(reports, t, 1)
        if s1 and direct1 and nginx_added is not None:
            added = s1.wrk.p50_us - direct1.wrk.p50_us
            if nginx_added > 0:
                ratio = added / nginx_added
                ok = ratio <= TARGET_ADDED_P50_RATIO
                verdict = f"{ratio:.2f} (target ≤ {TARGET_ADDED_P50_RATIO:g}) {_verdict(ok)}"
            else:
                verdict = "n/a (nginx added no latency in this run)"
            lines.append(f"- {t} added p50 at c=1: {added:.0f} µs; ÷ nginx's {nginx_added:.0f} µs = {verdict}")
        else:
            lines.append(f"- {t} added p50 at c=1: n/a (needs targets direct, nginx and c=1)")
        rep = reports[t]
        lines.append(
            f"- {t} ready to serve: {rep.ready_ms:.0f} ms from spawn to the first kube-probe 200 "
            f"(target ≤ {TARGET_READY_MS:g} ms) {_verdict(rep.ready_ms <= TARGET_READY_MS)}"
        )
        idle_mb = rep.rss_idle_kb / 1024
        lines.append(
            f"- {t} RSS idle: {idle_mb:.1f} MB (target < {TARGET_RSS_IDLE_MB:g} MB) "
            f"{_verdict(idle_mb < TARGET_RSS_IDLE_MB)}"
        )
        if rep.long is not None:
            lr = rep.long
            long_mb = lr.rss_kb / 1024
            done = lr.requests >= lr.requested
            lines.append(
                f"- {t} RSS after {lr.requests:,} requests (--long {lr.requested:,},"
                f" wrk -t1 -c{lr.connections}, {lr.seconds:.0f} s, {lr.errors} errors):"
                f" {long_mb:.1f} MB (target < {TARGET_RSS_LONG_MB:g} MB) "
                + (_verdict(long_mb < TARGET_RSS_LONG_MB) if done else "MISS (count not reached within --long-max)")
            )
    if not sluices:
        lines.append("- sluice targets not measured: no req/s ratio, added-p50 ratio, ready or RSS verdicts")
    errs = [f"{r.target} c={r.connections}" for rep in reports.values() for r in rep.rows if r.wrk.errors]
    if errs:
        lines.append(f"- WARNING: errors in {', '.join(errs)}: those rows are not comparable")
    return lines


def machine_lines(tools: Tools) -> list[str]:
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = "unknown"
    versions = []
    for argv in ([tools.nginx, "-v"], [tools.wrk, "-v"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        versions.append((out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else "?")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: nproc {os.cpu_count()}, usable CPUs {sorted(os.sched_getaffinity(0))}, CPU {model}, "
        f"Linux {platform.release()}, load average at start {load}",
        f"- tools: {versions[0]}; {versions[1]}; runner Python {platform.python_version()}",
    ]


def hot_path(python: str) -> str:
    """Whether the QP under test runs the mypyc-compiled hot path (hatch_build.py) or the sources."""
    probe = "import sluice.native as n, proxy.handler as h; print(n.compiled(h), n.fallback_reason)"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30, cwd=REPO)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    compiled, _, reason = out.stdout.strip().partition(" ")
    if compiled == "True":
        return "compiled (mypyc)"
    return "interpreted" + (f" ({reason})" if reason and reason != "None" else " (no native build)")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def explicit_command(args: argparse.Namespace) -> str:
    argv = [
        "python", "bench/proxy_bench.py",
        "--duration", f"{args.duration_s}s", "--warmup", f"{args.warmup_s}s",
        "--connections", ",".join(map(str, args.connections)), "--targets", ",".join(args.targets),
    ]  # fmt: skip
    if args.long:
        argv += ["--long", str(args.long), "--long-connections", str(args.long_connections)]
    argv += ["--proxy-cpu", str(args.proxy_cpu), "--load-cpu", str(args.load_cpu)]
    return shlex.join(argv)


def render(
    args: argparse.Namespace,
    header: Sequence[str],
    reports: Mapping[str, TargetReport],
    finished: dt.datetime,
    incomplete: str = "",
) -> str:
    rows = [format_row(r) for rep in reports.values() for r in rep.rows]
    parts = [
        f"# Queue-proxy benchmark, {finished:%Y-%m-%d %H:%M:%S} UTC",
        "",
        *([f"**INCOMPLETE ({incomplete}): partial results only.**", ""] if incomplete else []),
        "Command (as run):",
        "",
        f"    {args.invoked}",
        "",
        "Equivalent with every option explicit:",
        "",
        f"    {explicit_command(args)}",
        "",
        *header,
        f"- load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- each cell: {args.warmup_s}s warm-up, then"
        f" `taskset -c {args.load_cpu} wrk -t1 -cN -d{args.duration_s}s --latency`;"
        f" proxy under test on CPU {args.proxy_cpu}, wrk + upstream nginx on CPU {args.load_cpu}",
        "",
        TABLE_HEADER,
        *rows,
        "",
        "Derived (issue 2 targets):",
        "",
        *derived_lines(reports),
        "",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proxy_bench.py",
        description="wrk benchmark of the Sluice queue-proxy against nginx (direct and as reverse proxy).",
    )
    p.add_argument("--duration", default="10s", help="measured wrk run per cell, whole seconds (default 10s)")
    p.add_argument("--warmup", default="1s", help="warm-up wrk run before each cell, 0 to skip (default 1s)")
    p.add_argument("--connections", default="1,10,50", help="wrk -c values (default 1,10,50)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="direct,nginx,sluice-cc<N>,...")
    p.add_argument("--long", type=int, default=0, metavar="N", help="per sluice target: RSS after N requests")
    p.add_argument("--long-connections", type=int, default=50, metavar="C", help="wrk -c of the --long run")
    p.add_argument("--long-max", default="600s", help="upper bound on one --long run (default 600s)")
    p.add_argument("--out", type=Path, help="Markdown report (default bench/results/proxy-<UTC timestamp>.md)")
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU of the proxy under test (default 0)")
    p.add_argument("--load-cpu", type=int, default=1, help="CPU of wrk and the upstream nginx (default 1)")
    p.add_argument("--python", help="interpreter for `-m proxy` (default .venv/bin/python of the repo)")
    p.add_argument("--ready-timeout", type=float, default=10.0, help="seconds to wait for a target to be ready")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for debugging")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.duration_s = parse_duration_s(args.duration)
        args.warmup_s = parse_duration_s(args.warmup)
        args.long_max_s = parse_duration_s(args.long_max)
        args.connections = parse_connections(args.connections)
        args.targets = parse_targets(args.targets)
    except ValueError as exc:
        parser.error(str(exc))
    if args.duration_s < 1:
        parser.error("--duration must be at least 1s")
    usable = os.sched_getaffinity(0)
    for opt, cpu in (("--proxy-cpu", args.proxy_cpu), ("--load-cpu", args.load_cpu)):
        if cpu not in usable:
            parser.error(f"{opt} {cpu} is not a usable CPU here ({sorted(usable)})")
    if args.proxy_cpu == args.load_cpu:
        parser.error("--proxy-cpu and --load-cpu must differ (the proxy must not share a core with wrk)")
    if args.long < 0 or args.long_connections < 1:
        parser.error("--long and --long-connections must be positive")
    args.invoked = shlex.join(["python", *([sys.argv[0]] if sys.argv else []), *argv])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    tools = find_tools()
    s = Settings(
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        connections=args.connections,
        targets=args.targets,
        long=args.long,
        long_connections=args.long_connections,
        long_max_s=args.long_max_s,
        proxy_cpu=args.proxy_cpu,
        load_cpu=args.load_cpu,
        python=qp_python(args.python),
        ready_timeout_s=args.ready_timeout,
    )
    started = dt.datetime.now(dt.UTC)
    out = args.out or REPO / "bench" / "results" / f"proxy-{started:%Y%m%d-%H%M%S}.md"
    print(f"command: {args.invoked}", flush=True)
    header = [
        *machine_lines(tools),
        f"- commit: {git_commit()}; QP interpreter: {s.python}; hot path: {hot_path(s.python)}",
    ]
    print("\n".join(header), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="sluice-proxy-bench-"))
    procs = Processes(workdir)
    reports: dict[str, TargetReport] = {}
    try:
        with terminate_on_signals():
            if any(sluice_cc(t) is not None for t in s.targets):
                check_qp_importable(s.python)
            upstream = start_nginx(procs, tools, workdir, "upstream", s.load_cpu, None)
            print(f"upstream nginx on {LOOPBACK}:{upstream.port} (CPU {s.load_cpu})", flush=True)
            for target in s.targets:
                bench_target(procs, tools, s, workdir, upstream, target, reports)
    except BenchError as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        status, incomplete = 1, f"failed: {str(exc).splitlines()[0]}"
    except KeyboardInterrupt:
        print("proxy_bench: interrupted; stopping everything", file=sys.stderr)
        status, incomplete = 130, "interrupted"
    else:
        status, incomplete = 0, ""
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if not any(rep.rows for rep in reports.values()):
        return status
    report = render(args, header, reports, dt.datetime.now(dt.UTC), incomplete)
    print()
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
