"""The queue-proxy zygote (sluice/local/zygote.py): a forked child must be what an exec'd
`python -m <module>` would be — its own session and process group, the pod's environment only,
stdio on the pod's log, `__main__` run afresh, exit codes and signals reported as asyncio reports
them — and it dies with the zygote. Real processes throughout."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sluice.local.procs import Child, http_get
from sluice.local.zygote import ZygoteClient, ZygoteExecError, startup_env
from tests.support import qp_env

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux-only"),
    pytest.mark.timeout(60),
]

APP = "tests.local.zygote_app"


def pod_env(**extra: str) -> dict[str, str]:
    return startup_env(os.environ) | {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_ONLY": "yes"} | extra


def zygote_env() -> dict[str, str]:
    return dict(os.environ) | {"ZYGOTE_ONLY": "not for pods"}


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[ZygoteClient]:
    z = ZygoteClient(sys.executable, APP, zygote_env(), tmp_path / "zygote.log")
    await z.start()
    try:
        yield z
    finally:
        await z.stop()


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.01)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.01)
    return predicate()


async def log_lines(path: Path, want: str) -> list[str]:
    assert await until(lambda: want in read(path)), f"{want!r} not in {path}: {read(path)}"
    return read(path).splitlines()


def seen_by_child(lines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(lines[0])
    return out


def gone(pid: int) -> bool:
    """Exited (a zombie whose parent is gone counts: nothing runs any more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


async def test_child_runs_the_module_as_main_with_the_pods_process_state(zygote: ZygoteClient, tmp_path: Path) -> None:
    env = pod_env(ZYGOTE_APP_EXIT="3")
    log = tmp_path / "pod" / "app.log"
    proc = await zygote.fork(["--flag", "x"], env, log, str(tmp_path))
    assert await asyncio.wait_for(proc.wait(), 10) == 3
    assert proc.returncode == 3
    lines = await log_lines(log, "atexit ran")
    seen = seen_by_child(lines)
    assert seen["name"] == "__main__"
    assert seen["argv"][0].endswith(os.path.join("zygote_app", "__main__.py"))  # as `-m` sets it
    assert seen["argv"][1:] == ["--flag", "x"]
    assert seen["env"] == env  # the pod's environment, nothing of the zygote's
    assert seen["cwd"] == str(tmp_path)
    assert seen["pid"] == seen["pgid"] == seen["sid"] == proc.pid  # its own session and group
    assert zygote.child is not None and seen["ppid"] == zygote.child.pid
    assert seen["threads"] == 1
    assert seen["sigchld_default"]  # not the zygote's handler
    assert seen["stdin"] == ""  # /dev/null


async def test_uncaught_exception_exits_1_with_its_traceback_in_the_log(zygote: ZygoteClient, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    proc = await zygote.fork([], pod_env(ZYGOTE_APP_EXIT="raise"), log, None)
    assert await asyncio.wait_for(proc.wait(), 10) == 1
    text = read(log)
    assert "Traceback" in text and "RuntimeError: the app failed" in text
    assert "atexit ran" in text


async def test_sigterm_to_the_group_stops_it_and_the_exit_is_reported(zygote: ZygoteClient, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    child = Child("app", await zygote.fork([], pod_env(ZYGOTE_APP_EXIT="wait"), log, None), log)
    await log_lines(log, "waiting")
    assert child.running
    assert await child.stop(5.0) == 0
    assert not child.running


async def test_children_die_with_the_zygote(zygote: ZygoteClient, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    proc = await zygote.fork([], pod_env(ZYGOTE_APP_EXIT="wait"), log, None)
    await log_lines(log, "waiting")
    assert zygote.child is not None
    os.kill(zygote.child.pid, signal.SIGKILL)
    # Unreported by the dead zygote: the client reports what PR_SET_PDEATHSIG did.
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    assert await until(lambda: gone(proc.pid), 5)
    assert not zygote.alive
    with pytest.raises(OSError):
        await zygote.fork([], pod_env(), log, None)


async def test_exec_request_runs_a_program_with_env_cwd_and_exit_code(zygote: ZygoteClient, tmp_path: Path) -> None:
    log = tmp_path / "user.log"
    code = "import os, sys; print(os.getcwd(), os.environ['POD_ONLY'], 'ZYGOTE_ONLY' in os.environ); sys.exit(5)"
    proc = await zygote.fork([sys.executable, "-c", code], pod_env(), log, str(tmp_path), exec_=True)
    assert await asyncio.wait_for(proc.wait(), 10) == 5
    assert read(log).split() == [str(tmp_path), "yes", "False"]


async def test_exec_request_that_cannot_exec_is_an_error_of_the_container(zygote: ZygoteClient, tmp_path: Path) -> None:
    log = tmp_path / "user.log"
    with pytest.raises(ZygoteExecError) as missing:
        await zygote.fork(["no-such-program-here"], pod_env(), log, None, exec_=True)
    assert missing.value.errno == errno.ENOENT
    assert missing.value.strerror == "No such file or directory"
    with pytest.raises(ZygoteExecError) as bad_dir:
        await zygote.fork([sys.executable, "-c", "pass"], pod_env(), log, str(tmp_path / "nowhere"), exec_=True)
    assert bad_dir.value.errno == errno.ENOENT
    # The zygote serves on.
    proc = await zygote.fork([], pod_env(ZYGOTE_APP_EXIT="0"), tmp_path / "app.log", None)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_fits_only_what_it_would_start_the_same(zygote: ZygoteClient) -> None:
    argv = [sys.executable, "-m", APP]
    assert zygote.fits(argv, pod_env())
    assert zygote.fits([*argv, "--arg"], pod_env())
    assert not zygote.fits([sys.executable, "-m", "proxy"], pod_env())
    assert not zygote.fits(["python9", "-m", APP], pod_env())
    # Read while the interpreter starts: a child of this zygote could not honour them.
    assert not zygote.fits(argv, pod_env(PYTHONPATH="/elsewhere"))
    assert not zygote.fits(argv, pod_env(SLUICE_PURE_PYTHON="0" if os.environ.get("SLUICE_PURE_PYTHON") else "1"))


async def test_forked_queue_proxy_serves_drains_on_sigterm_and_logs_to_the_pod(tmp_path: Path) -> None:
    z = ZygoteClient(sys.executable, "proxy", zygote_env(), tmp_path / "zygote.log")
    await z.start()
    try:
        ip = f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
        env = pod_env() | qp_env(
            1,  # no app: the readiness below is the queue-proxy's own (no SERVING_READINESS_PROBE)
            SERVING_POD_IP=ip,
            SLUICE_BIND_HOST=ip,
            QUEUE_SERVING_PORT="8012",
            SLUICE_ADMIN_PORT="8022",
            SLUICE_METRICS_PORT="9090",
            SLUICE_DRAIN_QUIET_PERIOD="0.1",
        )
        log = tmp_path / "queue-proxy.log"
        child = Child("qp", await z.fork([], env, log, None), log)
        probe = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
        status = 0
        for _ in range(1500):
            status, _ = await http_get(ip, 8012, "/", probe, 1.0)
            if status == 200:
                break
            await asyncio.sleep(0.01)
        assert status == 200
        assert await child.stop(10.0) == 0
        text = read(log)
        assert "queue-proxy serving" in text and "received TERM signal" in text and "queue-proxy stopped" in text
    finally:
        await z.stop()
