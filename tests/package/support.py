"""Helpers for the packaging tests: real `sluice local` processes, marked through their
environment so that every descendant can be found afterwards, and a private TMPDIR to check
that nothing is left in it."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.local.state import StateDir
from tests.support import free_port

MARK = "PKG_TEST_MARK"  # not SLUICE_*: the kubelet passes other variables on to the pods too


@dataclass
class Run:
    """The environment of one marked run: its own state dir, TMPDIR, loopback block and port."""

    root: Path
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    net: str = field(default_factory=lambda: f"127.{random.randrange(100, 250)}")
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update({MARK: self.mark, "TMPDIR": str(self.tmp)})
        return env

    def up_args(self) -> list[str]:
        return ["local", "--home", str(self.home), "up", "--net", self.net, "--port", str(self.port)]

    def state(self) -> dict[str, Any]:
        return StateDir(self.home).read_state() or {}

    def survivors(self) -> list[str]:
        """Processes still alive that carry this run's mark (any descendant of the run)."""
        needle = f"{MARK}={self.mark}".encode()
        out = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    out.append(f"{proc.name} {cmdline[:120]}")
            except OSError:
                continue
        return out

    def wait_no_survivors(self, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        left = self.survivors()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.survivors()
        return left

    def leftover_temp_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*"))

    def assert_clean(self) -> None:
        """No marked process alive (after a short grace) and nothing left in TMPDIR."""
        assert self.wait_no_survivors() == []
        assert self.leftover_temp_files() == []

    @contextlib.contextmanager
    def process(self, argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
        """A marked child with piped text output, killed if still running when the block ends."""
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
