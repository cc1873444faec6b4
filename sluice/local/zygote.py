"""A pre-forked queue-proxy for `sluice local` (a "zygote"), issue 19.

An exec'd queue-proxy spends ~95 ms of CPU before it listens, ~70 ms of it on the interpreter and
the imports of asyncio and uvloop (bench/RESULTS.md, issue 19); on a cold start that is on the
request's path, and 50 pods woken at once pay it 50 times on two CPUs. The zygote is one process
that has imported the module's code once and forks a child per pod: the child sets up the pod's
process state (session, parent-death signal, stdio to the pod's log, working directory,
environment) and runs the module as `python -m <module>` would, from its `__main__`.

What makes the child the same as an exec'd one:
- No event loop and no thread exist in the zygote (checked at start): the child's `uvloop.run`
  makes the first loop, and nothing is half-locked across the fork.
- Only variables read at import differ by process in principle (PYTHON*, SLUICE_PURE_PYTHON): the
  zygote is started with the queue-proxies' common environment, and the kubelet execs a pod whose
  environment differs from it in one of those (`ZygoteClient.fits`).
- `<module>.__main__` is executed afresh in each child (it is dropped from sys.modules after the
  preload), with `sys.argv` as `-m` sets it; SystemExit, an uncaught exception, atexit handlers and
  the join of non-daemon threads then end the child as they end any interpreter.
- The child calls setsid (its pid is its process-group id: the kubelet signals the group) and
  PR_SET_PDEATHSIG (it dies with the zygote, which dies with the supervisor).
- `random` is reseeded by CPython's own at-fork hook. What a fork cannot give: a hash seed of its
  own per pod (docs/DIFFERENCES.md).

The zygote also starts the pods' other processes (`"exec": true`): forking the small zygote rather
than the supervisor keeps a 25-55 ms fork off the supervisor's event loop (ingress, API,
controller) for every pod.

Protocol on the socketpair the supervisor passes (one JSON line per request, one text line per
answer, all tagged with the request's id): `{"id", "args", "env", "cwd", "log", "exec"}` →
`<id> pid <pid>` once forked (and exec'd), then `<id> exit <code>` when it ends (a negative code is
the signal that killed it, as asyncio reports it); `<id> error <message>` if it could not fork,
`<id> execerror <errno> <strerror>` if the program could not be exec'd.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import Child, set_parent_death_signal, spawn

__all__ = ["ForkedProcess", "ZygoteClient", "ZygoteExecError", "startup_env"]

_PRELOAD = ("uvloop",)  # imported by `sluice.aio.run` at start, not by `proxy.__main__` itself


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a process reads while it starts (the interpreter's PYTHON*, the native-build
    guard's SLUICE_PURE_PYTHON): a forked child inherits what the zygote read, not its own."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k == "SLUICE_PURE_PYTHON"}


# ---- the zygote process ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    """What a forked child runs once it has left the zygote's loop."""

    module: str
    args: list[str]


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.pid = os.getpid()
        self.children: dict[int, str] = {}  # pid → request id
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd hears of it
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def run(self, module: str) -> _Job | None:
        """Serves until the supervisor closes its end (None); returns in a forked child only."""
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self._reap()
                    continue
                data = self.control.recv(65536)
                if not data:
                    return None
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    job = self._fork(module, json.loads(line))
                    if job is not None:
                        return job

    def _send(self, line: str) -> None:
        # The supervisor closing its end (shutdown) is seen by the next recv; nothing to report to.
        with contextlib.suppress(OSError):
            self.control.sendall(line.encode() + b"\n")

    def _fork(self, module: str, req: dict[str, Any]) -> _Job | None:
        rid = str(req["id"])
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # An exec request reports a failed exec as an error, as subprocess does: the child writes
        # its errno to a close-on-exec pipe, which an exec that succeeds closes empty.
        errors_r, errors_w = os.pipe() if req.get("exec") else (-1, -1)
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (errors_r, errors_w):
                if fd >= 0:
                    os.close(fd)
            self._send(f"{rid} error {exc}")
            return None
        if pid == 0:
            # Whatever happens here, this process never returns into the zygote's loop.
            try:
                job = self._child(module, req)
                if errors_w < 0:
                    return job
                os.execvpe(job.args[0], job.args, os.environ)
            except OSError as exc:
                if errors_w >= 0:
                    os.write(errors_w, f"{exc.errno or 0} {exc.strerror or exc}".encode())
                else:
                    print(f"cannot start {module}: {exc}", file=sys.stderr, flush=True)
            except BaseException as exc:  # reported in the pod's log, then exit
                print(f"cannot start {module}: {exc!r}", file=sys.stderr, flush=True)
            os._exit(127)
        if errors_w >= 0:
            os.close(errors_w)
            with os.fdopen(errors_r, "rb") as f:
                failed = f.read().decode(errors="replace")
            if failed:
                self._send(f"{rid} execerror {failed}")  # the child exits 127, reaped unreported
                return None
        self.children[pid] = rid
        self._send(f"{rid} pid {pid}")
        return None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rid = self.children.pop(pid, None)
            if rid is not None:
                self._send(f"{rid} exit {os.waitstatus_to_exitcode(status)}")

    def _child(self, module: str, req: dict[str, Any]) -> _Job:
        # Leave the zygote: its signal set-up, selector and sockets are none of the pod's.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.setsid()
        set_parent_death_signal()
        if os.getppid() != self.pid:  # the zygote died before the signal was armed
            os._exit(1)
        out = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        if req.get("cwd"):
            os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        return _Job(module, [str(a) for a in req.get("args") or ()])


def _preload(module: str) -> None:
    importlib.import_module(f"{module}.__main__")
    # Executed afresh as __main__ in each child (runpy warns about, and would reuse, a copy in
    # sys.modules); what it imported stays loaded.
    del sys.modules[f"{module}.__main__"]
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # The preloaded objects outlive every child: out of the collector's reach, a child's first
    # full collection does not touch (and so copy) the pages they share with the zygote.
    gc.collect()
    gc.freeze()
    if threading.active_count() != 1:
        raise RuntimeError(f"importing {module} started threads: a fork would copy them half-done")


def main(argv: Sequence[str]) -> None:
    """`python -m sluice.local.zygote <control fd> <module>`."""
    control = socket.socket(fileno=int(argv[0]))
    module = argv[1]
    _preload(module)
    job = _Zygote(control).run(module)
    if job is None:
        return
    sys.argv = ["-m", *job.args]  # runpy puts the module's file in argv[0], as `-m` does
    runpy.run_module(job.module, run_name="__main__", alter_sys=True)


# ---- the kubelet's side ----------------------------------------------------------------------


class ZygoteExecError(OSError):
    """The program could not be exec'd (ENOENT, EACCES, ...): the container's error, not the zygote's."""


class ForkedProcess:
    """A zygote's child as the kubelet sees it: what `Child` uses of an asyncio Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = asyncio.Event()

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode


class ZygoteClient:
    """Starts the zygote (`python -m sluice.local.zygote`) and asks it for children."""

    def __init__(self, python: str, module: str, env: Mapping[str, str], log_path: Path) -> None:
        self.python = python
        self.module = module
        self.env = dict(env)
        self.log_path = log_path
        self.child: Child | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ids = 0
        self._pending: dict[str, asyncio.Future[ForkedProcess]] = {}
        self._procs: dict[str, ForkedProcess] = {}

    @property
    def alive(self) -> bool:
        return self._writer is not None and self.child is not None and self.child.running

    def fits(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether a child of this zygote is what exec'ing `argv` with `env` would start."""
        return (
            list(argv[:3]) == [self.python, "-m", self.module]
            and startup_env(env) == startup_env(self.env)
            and self.alive
        )

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            argv = [self.python, "-m", "sluice.local.zygote", str(theirs.fileno()), self.module]
            self.child = await spawn("zygote", argv, self.env, self.log_path, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader), name="zygote-reader")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                rid, kind, value = line.decode().rstrip("\n").split(" ", 2)
                if kind == "pid":
                    proc = ForkedProcess(int(value))
                    self._procs[rid] = proc
                    fut = self._pending.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(proc)
                elif kind == "exit":
                    exited = self._procs.pop(rid, None)
                    if exited is not None:
                        exited.exited(int(value))
                else:
                    fut = self._pending.pop(rid, None)
                    if fut is not None and not fut.done():
                        if kind == "execerror":
                            errno, _, strerror = value.partition(" ")
                            fut.set_exception(ZygoteExecError(int(errno), strerror))
                        else:
                            fut.set_exception(OSError(value))
        finally:
            self._writer = None
            # Its children died with it (PR_SET_PDEATHSIG, SIGKILL), unreported.
            for proc in self._procs.values():
                proc.exited(-signal.SIGKILL)
            self._procs.clear()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(OSError("the queue-proxy zygote exited"))
            self._pending.clear()

    async def fork(
        self, args: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: str | None, exec_: bool = False
    ) -> ForkedProcess:
        """A child running the module with `args` (what `python -m module *args` runs), or, with
        `exec_`, the program `args` exec'd (forked from the small zygote, off the supervisor's
        event loop: a fork of the supervisor blocks its loop for 25-55 ms on this VM)."""
        if self._writer is None:
            raise OSError("the queue-proxy zygote is not running")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._ids += 1
        rid = str(self._ids)
        fut: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        req = {"id": rid, "args": list(args), "env": dict(env), "cwd": cwd, "log": str(log_path), "exec": exec_}
        self._writer.write(json.dumps(req, separators=(",", ":")).encode() + b"\n")
        return await fut

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.child is not None:
            await self.child.stop(2.0)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


if __name__ == "__main__":
    main(sys.argv[1:])
