"""Child processes of `sluice local`: spawned in their own process group (so a stop reaches a
shell's children too) and, on Linux, with PR_SET_PDEATHSIG so they die if the supervisor is
killed outright. Plus address allocation on 127/8 and a tiny HTTP GET for probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

__all__ = [
    "AddressPool",
    "Child",
    "http_get",
    "port_busy",
    "proc_start_ticks",
    "set_parent_death_signal",
    "signal_group",
    "spawn",
]

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal() -> None:
    """SIGKILL when the parent dies (Linux; elsewhere the group stop at shutdown is all)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_setup() -> None:  # runs in the forked child, before exec
    os.setsid()
    set_parent_death_signal()


class Process(Protocol):
    """What `Child` uses of a process: an asyncio subprocess, or a zygote's child."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class Child:
    """A started process: `pid` is also its process-group id."""

    def __init__(self, name: str, proc: Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.started = asyncio.get_running_loop().time()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the group, SIGKILL after `grace` seconds; returns the exit code."""
        if self.running:
            signal_group(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                pass
        signal_group(self.pid, signal.SIGKILL)  # stragglers left in the group, if any
        if self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5.0)
        return self.proc.returncode

    def tail(self, limit: int = 2000) -> str:
        """The end of the log (what a crash printed), for statuses."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(lines[-8:])


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = log_path.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_child_setup,
            pass_fds=pass_fds,
        )
    finally:
        out.close()
    return Child(name, proc, log_path)


def proc_start_ticks(pid: int) -> int | None:
    """Start time of a process (field 22 of /proc/<pid>/stat), to tell a PID from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class AddressPool:
    """Loopback addresses `<prefix>.x.y` for pods (all of 127/8 reaches `lo` on Linux), so each
    pod has its own IP and Knative's fixed ports (8012, 8022, 9090) hold per pod
    (ARCHITECTURE.md). `.0.x` is reserved for the system components."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.in_use: set[str] = set()
        self.ports: set[int] = set()
        self._next = 0

    def system(self, index: int) -> str:
        return f"{self.prefix}.0.{index}"

    def take(self) -> str:
        for _ in range(254 * 250):
            self._next = self._next % (254 * 250) + 1
            third, fourth = 1 + (self._next - 1) // 254, 1 + (self._next - 1) % 254
            ip = f"{self.prefix}.{third}.{fourth}"
            if ip not in self.in_use:
                self.in_use.add(ip)
                return ip
        raise RuntimeError("no free pod address")

    def release(self, ip: str) -> None:
        self.in_use.discard(ip)

    def take_port(self) -> int:
        """A port free on every address (the user process may bind 0.0.0.0:$PORT)."""
        for _ in range(100):
            with socket.socket() as s:
                s.bind(("0.0.0.0", 0))
                port = int(s.getsockname()[1])
            if port not in self.ports:
                self.ports.add(port)
                return port
        raise RuntimeError("no free port")

    def release_port(self, port: int) -> None:
        self.ports.discard(port)


async def http_get(host: str, port: int, path: str, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
    """One HTTP/1.1 GET without keep-alive; (0, b"") when it fails to connect or answer."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            data = await reader.read(-1)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return 0, b""
        if b"chunked" in head.lower():
            body = _dechunk(body)
        return int(parts[1]), body

    try:
        return await asyncio.wait_for(go(), timeout)
    except (OSError, TimeoutError, ValueError):
        return 0, b""


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
