"""`sluice local logs` over the files the process kubelet writes (`logs/pods/<ns>_<pod>/<c>.log`):
which files, which pods, tail, and following across a container restart (the kubelet moves the
old output to `<c>.previous.log` and starts a new file)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from sluice.local.commands.logs import LogsError, LogsOptions, run_logs

REV = "hello-00001"
POD_A = f"{REV}-deployment-abc-aaaaa"
POD_B = f"{REV}-deployment-abc-bbbbb"


def _snapshot(logs: Path, pods: list[str]) -> dict[str, Any]:
    revision = {"name": REV, "pods": [{"name": p, "phase": "Running"} for p in pods]}
    svc = {"namespace": "default", "name": "hello", "latest_ready": REV, "revisions": [revision]}
    return {"logs": str(logs), "services": [svc]}


def _write(logs: Path, pod: str, name: str, text: str) -> Path:
    path = logs / "pods" / f"default_{pod}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run(snap: dict[str, Any], opts: LogsOptions, running: Any = None) -> tuple[list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    assert run_logs(lambda: snap, running or (lambda: False), opts, out, err) == 0
    return out.getvalue().splitlines(), err.getvalue()


def test_prefix_tail_and_container_choice(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _write(logs, POD_A, "app.log", "a1\na2\na3\n")
    _write(logs, POD_A, "app.previous.log", "old\n")  # never the default choice
    _write(logs, POD_A, "queue-proxy.log", '{"logger":"queueproxy"}\n')
    _write(logs, POD_B, "app.log", "b1\npartial")
    snap = _snapshot(logs, [POD_A, POD_B])
    lines, _ = _run(snap, LogsOptions("hello"))
    assert lines == [f"[pod/{POD_A}/user-container] a{i}" for i in (1, 2, 3)] + [
        f"[pod/{POD_B}/user-container] b1",
        f"[pod/{POD_B}/user-container] partial",
    ]
    lines, _ = _run(snap, LogsOptions("hello", tail=1))
    assert lines == [f"[pod/{POD_A}/user-container] a3", f"[pod/{POD_B}/user-container] partial"]
    lines, _ = _run(snap, LogsOptions("hello", container="queue-proxy"))
    assert lines == [f'[pod/{POD_A}/queue-proxy] {{"logger":"queueproxy"}}']
    with pytest.raises(LogsError, match="not found"):
        _run(snap, LogsOptions("nope"))


def test_scaled_to_zero_shows_the_stopped_pods(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _write(logs, POD_A, "user-container.log", "served /\n")
    _write(logs, "other-00001-deployment-x-y", "user-container.log", "not this revision\n")
    lines, err = _run(_snapshot(logs, []), LogsOptions("hello"))
    assert lines == [f"[pod/{POD_A}/user-container] served /"]
    assert "no running pod" in err


def test_follow_continues_after_a_restart(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    path = _write(logs, POD_A, "user-container.log", "before\n")
    snap = _snapshot(logs, [POD_A])
    ticks = iter(range(100))

    def running() -> bool:
        n = next(ticks)
        if n == 2:
            with path.open("a") as f:
                f.write("crashing\n")
        if n == 4:  # what the kubelet does on a restart
            os.replace(path, path.with_name("user-container.previous.log"))
            path.write_text("after restart\n")
        return n < 7

    lines, _ = _run(snap, LogsOptions("hello", follow=True, tail=0, poll=0.01), running)
    assert lines == [f"[pod/{POD_A}/user-container] crashing", f"[pod/{POD_A}/user-container] after restart"]
