"""scale-from-zero (Knative test/performance/benchmarks/scale-from-zero), scaled: N services at
zero pods are woken at the same instant, one user per service; each user sends GETs until the
first 200 and reports the time from the common start to that response as a request named
`cold <path>` (its response_time). Other responses count as errors (`GET <path>` rows).

    SLUICE_BENCH_TARGETS   JSON list of paths, one per user, e.g. ["/zero-1/", "/zero-2/"]
    SLUICE_BENCH_RAW_DIR   as in recorder.py

Run with -u N (= number of targets) and a spawn rate >= N: users wait at a barrier until all N
exist, so the requests leave together; the last user to finish stops the run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from recorder import RAW  # the raw-sample recorder (also registers its listeners)

TARGETS: list[str] = json.loads(os.environ.get("SLUICE_BENCH_TARGETS", '["/"]'))
_ALL_SPAWNED = threading.Event()  # gevent's, once locust has monkey-patched threading
_state: dict[str, Any] = {"spawned": 0, "done": 0, "t0": 0.0}


class _Ok:
    status_code = 200


class ColdUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.path = TARGETS[_state["spawned"] % len(TARGETS)]
        _state["spawned"] += 1
        if _state["spawned"] >= len(TARGETS):
            _state["t0"] = time.time()
            _ALL_SPAWNED.set()
        _ALL_SPAWNED.wait(30)

    @task
    def first_good_response(self) -> None:
        t0 = float(_state["t0"]) or time.time()
        deadline = t0 + 60
        good = False
        while not good and time.time() < deadline:
            with self.client.get(self.path + "?sleep=0", name=f"GET {self.path}", catch_response=True) as resp:
                if resp.status_code == 200:
                    resp.success()
                    good = True
                    continue
                resp.failure(f"status {resp.status_code}")
            time.sleep(0.05)
        took = (time.time() - t0) * 1000
        hook: Any = events.request  # untyped
        hook.fire(
            request_type="COLD",
            name=f"cold {self.path}",
            response_time=took,
            response_length=0,
            response=_Ok() if good else None,
            context={},
            exception=None if good else TimeoutError("no 200 within 60 s"),
            start_time=t0,
        )
        _state["done"] += 1
        if _state["done"] >= len(TARGETS):
            RAW.flush()
            runner = self.environment.runner
            if runner is not None:
                threading.Timer(0.2, runner.quit).start()  # a greenlet: this user stops first
        raise StopUser()
