"""What the locustfiles share: the raw-sample recorder, a paced user and a staged load shape.

Imported by locustfiles only (locust adds the locustfile's directory to `sys.path`), so it runs
inside a locust process, never under pytest. Configuration comes from the environment the
runner (`run.py`) sets, which also reaches every forked worker (`--processes N`):

    SLUICE_BENCH_RAW_DIR         where each locust process appends its raw samples (raw-<pid>.csv)
    SLUICE_BENCH_PATH            the request path with its query, e.g. `/bench-serve/?sleep=100`
    SLUICE_BENCH_HEADERS         JSON object of extra request headers (the activator, addressed
                                 directly, needs Knative-Serving-Revision/-Namespace)
    SLUICE_BENCH_STAGES          JSON `[[seconds, rate], ...]`: the constant-rate schedule
    SLUICE_BENCH_PER_USER_RATE   req/s of one user (users = rate / this)
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, events, task
from scenarios import RAW_HEADER, next_due, pace_at, parse_stages, schedule_at


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


PATH = _env("SLUICE_BENCH_PATH", "/?sleep=100")
HEADERS: dict[str, str] = json.loads(_env("SLUICE_BENCH_HEADERS", "{}"))
PER_USER_RATE = float(_env("SLUICE_BENCH_PER_USER_RATE", "4"))
STAGES = parse_stages(_env("SLUICE_BENCH_STAGES", "[[10, 10]]"))


class _RawWriter:
    """Buffers `start,ms,status,name` rows and appends them to raw-<pid>.csv (pid: forked workers)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory) if directory else None
        self.rows: list[str] = []
        self.pid = 0

    def add(self, start: float, ms: float, status: int, name: str) -> None:
        self.rows.append(f"{start:.6f},{ms:.3f},{status},{name}\n")
        if len(self.rows) >= 2000:
            self.flush()

    def flush(self) -> None:
        if self.directory is None or not self.rows:
            return
        path = self.directory / f"raw-{os.getpid()}.csv"
        new = not path.exists()
        with path.open("a") as f:
            if new:
                f.write(",".join(RAW_HEADER) + "\n")
            f.writelines(self.rows)
        self.rows.clear()


RAW = _RawWriter(_env("SLUICE_BENCH_RAW_DIR", ""))
atexit.register(RAW.flush)


def listen(hook: Any, fn: Callable[..., None]) -> None:
    """`hook.add_listener(fn)`: locust's event hooks are untyped, their listeners here are not."""
    hook.add_listener(fn)


def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **_kw: Any,
) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    if exception is not None and 200 <= status < 400:
        status = 599  # a failure on a 2xx (a broken body): count it as an error
    RAW.add(start_time or 0.0, response_time, status, name)


def _on_test_stop(**_kw: Any) -> None:
    RAW.flush()


def _on_quitting(**_kw: Any) -> None:
    RAW.flush()


listen(events.request, _on_request)
listen(events.test_stop, _on_test_stop)
listen(events.quitting, _on_quitting)


_TEST_START = [time.monotonic()]


def _on_test_start(**_kw: Any) -> None:
    _TEST_START[0] = time.monotonic()


listen(events.test_start, _on_test_start)


class PacedUser(FastHttpUser):
    """GETs PATH over one keep-alive connection on a fixed schedule (like locust's
    `constant_throughput`) at the current stage's rate / users (about PER_USER_RATE req/s), so
    the users add up to the rate."""

    abstract = True
    network_timeout = 60.0
    connection_timeout = 60.0
    _due = 0.0

    def wait_time(self) -> float:
        now = time.monotonic()
        pace = pace_at(STAGES, now - _TEST_START[0], PER_USER_RATE)
        self._due = next_due(self._due or now, now, 1.0 / pace)
        return max(0.0, self._due - now)

    @task
    def get(self) -> None:
        if not self._due:
            self._due = time.monotonic()
        self.client.get(PATH, headers=HEADERS, name="GET")


class StagedShape(LoadTestShape):
    """STAGES as users: each stage's rate / PER_USER_RATE users, then stop."""

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        shape: Any = self  # LoadTestShape's methods are untyped
        return schedule_at(STAGES, float(shape.get_run_time()), PER_USER_RATE)
