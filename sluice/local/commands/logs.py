"""`sluice local logs SERVICE [-f] [--tail N] [-c user-container|queue-proxy]`.

What `kubectl logs -l serving.knative.dev/service=SERVICE --prefix` shows on a cluster: the output
of a container of every pod of the Service's latest ready Revision, each line prefixed with
`[pod/<pod>/<container>]`. The process kubelet writes each container's stdout and stderr to
`<state>/logs/pods/<namespace>_<pod>/<container>.log`; that is what is read here. When the
revision has no pod (scaled to zero), the logs of its stopped pods are shown, and `-f` waits for
the next pod (a request scales it from zero).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .views import find_service

__all__ = ["LogsError", "LogsOptions", "run_logs"]

QUEUE_PROXY = "queue-proxy"
USER_CONTAINER = "user-container"


class LogsError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class LogsOptions:
    service: str
    namespace: str = "default"
    container: str = USER_CONTAINER
    follow: bool = False
    tail: int = -1
    revision: str = ""
    poll: float = 0.25


@dataclass
class _Source:
    pod: str
    path: Path
    offset: int = 0
    partial: bytes = b""
    inode: int = 0
    live: bool = True
    seen: float = field(default_factory=time.monotonic)


def _revision(snap: dict[str, Any], opts: LogsOptions) -> tuple[str, list[str]]:
    """The revision whose pods are shown, and its live pod names."""
    svc = find_service(snap, opts.service, opts.namespace)
    if svc is None:
        raise LogsError(f"service {opts.namespace}/{opts.service} not found")
    rname = opts.revision or svc.get("latest_ready") or svc.get("latest_created") or ""
    rev = next((r for r in svc.get("revisions") or () if r["name"] == rname), None)
    if rev is None:
        raise LogsError(f"revision {rname or '(none yet)'} of service {opts.namespace}/{opts.service} not found")
    pods = [p["name"] for p in rev.get("pods") or () if p.get("phase") != "Terminating"]
    return rname, pods


def _container_file(pod_dir: Path, container: str) -> Path | None:
    """`<container>.log`; `user-container` also names the pod's first container whatever it is called."""
    exact = pod_dir / f"{container}.log"
    if exact.exists() or container != USER_CONTAINER:
        return exact if exact.exists() else None
    # The kubelet keeps a restarted container's earlier output as `<name>.previous.log`.
    others = sorted(
        p for p in pod_dir.glob("*.log") if p.name != f"{QUEUE_PROXY}.log" and not p.name.endswith(".previous.log")
    )
    return others[0] if others else None


def _tail_offset(path: Path, lines: int) -> int:
    """The offset of the last `lines` lines (all of the file for a negative count)."""
    if lines < 0:
        return 0
    data = path.read_bytes()
    if lines == 0:
        return len(data)
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return 0
    return cut + 1


class _Follower:
    def __init__(self, logs_dir: Path, opts: LogsOptions, out: TextIO) -> None:
        self.pods_dir = logs_dir / "pods"
        self.opts = opts
        self.out = out
        self.sources: dict[str, _Source] = {}

    def add(self, pod: str, from_start: bool) -> bool:
        if pod in self.sources:
            self.sources[pod].live = True
            return True
        path = _container_file(self.pods_dir / f"{self.opts.namespace}_{pod}", self.opts.container)
        if path is None:
            return False
        offset = 0 if from_start else _tail_offset(path, self.opts.tail)
        self.sources[pod] = _Source(pod, path, offset)
        return True

    def stopped_pods(self, revision: str) -> list[str]:
        """Pods of `revision` whose logs remain, oldest first (pod names are `<rev>-deployment-...`)."""
        prefix = f"{self.opts.namespace}_{revision}-deployment-"
        try:
            dirs = [d for d in self.pods_dir.iterdir() if d.name.startswith(prefix)]
        except OSError:
            return []
        dirs.sort(key=lambda d: d.stat().st_mtime)
        return [d.name[len(self.opts.namespace) + 1 :] for d in dirs]

    def pump(self) -> int:
        """Prints what was appended since the last call; the number of lines printed."""
        printed = 0
        for src in self.sources.values():
            try:
                with src.path.open("rb") as f:
                    st = os.fstat(f.fileno())
                    if src.inode and (st.st_ino != src.inode or st.st_size < src.offset):
                        src.offset = 0  # a restarted container writes a new file from its start
                    src.inode = st.st_ino
                    f.seek(src.offset)
                    data = f.read()
            except OSError:
                continue
            src.offset += len(data)
            data = src.partial + data
            lines = data.split(b"\n")
            src.partial = lines.pop()
            for line in lines:
                self.out.write(f"[pod/{src.pod}/{self.opts.container}] {line.decode('utf-8', 'replace')}\n")
                printed += 1
        if printed:
            self.out.flush()
        return printed

    def flush_partial(self) -> None:
        for src in self.sources.values():
            if src.partial:
                self.out.write(f"[pod/{src.pod}/{self.opts.container}] {src.partial.decode('utf-8', 'replace')}\n")
                src.partial = b""
        self.out.flush()


def run_logs(
    read_snapshot: Callable[[], dict[str, Any] | None],
    running: Callable[[], bool],
    opts: LogsOptions,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    snap = read_snapshot() or {}
    logs_dir = Path(str(snap.get("logs", "")))
    revision, pods = _revision(snap, opts)
    f = _Follower(logs_dir, opts, out)
    for pod in pods:
        f.add(pod, from_start=False)
    if not f.sources:
        stopped = f.stopped_pods(revision)
        if stopped:
            print(f"(revision {revision} has no running pod; showing its {len(stopped)} stopped pod(s))", file=err)
            for pod in stopped:
                f.add(pod, from_start=False)
                f.sources[pod].live = False
        elif not opts.follow:
            print(f"(revision {revision} has no pod yet)", file=err)
    f.pump()
    if not opts.follow:
        f.flush_partial()
        return 0
    try:
        last_check = 0.0
        while running():
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                snap = read_snapshot() or snap
                try:
                    _, pods = _revision(snap, opts)
                except LogsError:
                    pods = []
                for pod in pods:
                    # A pod that appears while following is shown from its first line.
                    f.add(pod, from_start=True)
            f.pump()
            time.sleep(opts.poll)
        f.pump()
        f.flush_partial()
    except KeyboardInterrupt:
        f.flush_partial()
    except BrokenPipeError:
        # `sluice local logs -f svc | head`: stop quietly, as kubectl does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
