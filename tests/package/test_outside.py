"""Sluice outside its repository (issue 14 §3), as a new user gets it: a `git clone` of this
checkout (committed files only, as CI's fresh clone) into a temporary folder with no `shared/`
beside it; the wheel built there the standard way (pip's build isolation, from a venv that has
nothing installed, so the build requirements must be complete); installed into that venv; and
`sluice local up --example autoscale` run from an unrelated directory: a 200 through the ingress
from zero pods, `status`, `down`, and no process or temporary file left behind.

The README's demo is checked the same way from the clone (`test_demo_runs_in_a_clone`).
Everything is built once per session and pip's cache is reused, to keep CI's time down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hatch_build
from tests.support import ROOT

from .support import Run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the build alone may take minutes

BUILD_TIMEOUT = 900  # the mypyc build takes 1-3 min on 2 busy cores; the bound only stops a hang


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{tail}"
    return done


@pytest.fixture(scope="session")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: nothing to clone")
    dest = tmp_path_factory.mktemp("outside") / "sluice"
    _run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], timeout=120)
    assert not (dest.parent / "shared").exists()
    return dest


@dataclass
class Installed:
    venv: Path
    wheel: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, run: Run) -> dict[str, str]:
        """A fresh machine's environment, as after a pipx-style install: `sluice` is called by
        its path, its venv is not activated, so the samples' `python3` is the system's."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "PYTHON", "VIRTUAL_ENV"))}
        return run.env(base | {"PATH": _plain_path()})


PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def _plain_path() -> str:
    """No pyenv shims or activated venvs (which would hide a sample that needs `python`, absent
    from Debian), unless this machine has no python3 there at all."""
    return PLAIN_PATH if shutil.which("python3", path=PLAIN_PATH) else os.environ["PATH"]


@pytest.fixture(scope="session")
def installed(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    dist = clone.parent / "dist"
    # The standard build: pip's isolated environment gets only [build-system] requires. The
    # venv has nothing installed yet, so mypyc cannot borrow h2 & co. from the running interpreter.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "PYTHON", "VIRTUAL_ENV"))}
    _run([python, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(clone)], timeout=BUILD_TIMEOUT, env=env)
    (wheel,) = dist.glob("knative_sluice-*.whl")
    _run([python, "-m", "pip", "install", f"{wheel}[k8s]"], timeout=600, env=env)
    return Installed(venv, wheel)


def test_the_wheel_is_a_platform_wheel_with_its_data(installed: Installed) -> None:
    assert not installed.wheel.name.endswith("-none-any.whl"), installed.wheel.name
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert "sluice/_native.json" in names and any(n.startswith("proxy/handler.") and n.endswith(".so") for n in names)
    for required in (
        "sluice/local/data/knative/NOTICE",
        "sluice/local/data/knative/LICENSE",
        "sluice/local/data/knative/300-resources/podautoscaler.yaml",
        "sluice/local/data/knative/configmaps/autoscaler.yaml",
        "sluice/local/data/examples/autoscale.yaml",
        "sluice/local/data/examples/autoscale.py",
    ):
        assert required in names, required


def test_installed_hot_path_is_compiled(installed: Installed, tmp_path: Path) -> None:
    probe = "import sluice.native as n, proxy.handler as h, activator.handler as a; print(n.compiled(h), n.compiled(a))"
    done = _run([installed.bin("python"), "-c", probe], cwd=tmp_path, env=installed.env(Run(tmp_path)), timeout=60)
    assert done.stdout.split() == ["True", "True"]


def _get(url: str, timeout: float) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def _revision(run: Run) -> dict[str, Any]:
    try:
        snap = json.loads((run.home / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    for svc in snap.get("services") or ():
        for rev in svc.get("revisions") or ():
            return dict(rev)
    return {}


def _at_zero(rev: dict[str, Any]) -> bool:
    # desired 0 after a scale-down, or unknown (None) for a revision made at initial-scale 0 that
    # has had no traffic yet (the KPA makes no decision before its first stat, as Knative's).
    at_rest = rev.get("desired") in (0, None)
    return rev.get("ready") == "True" and at_rest and rev.get("ready_pods") == 0 and not rev.get("pods")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path / "run")
    yield run
    for line in run.survivors():  # a failed test must not leave its processes to the next
        os.kill(int(line.split()[0]), 9)


def test_sluice_local_from_the_wheel_in_another_directory(installed: Installed, run: Run, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = installed.env(run)
    sluice = installed.bin("sluice")
    version = _run([sluice, "--version"], cwd=elsewhere, env=env, timeout=30)
    assert version.stdout.startswith("sluice 0.") and "knative/serving@" in version.stdout
    argv = [sluice, *run.up_args(), "--example", "autoscale"]
    # Made at zero (initial-scale 0), so the request below starts the first pod.
    for item in ("allow-zero-initial-scale=true", "initial-scale=0", "scale-to-zero-grace-period=3s"):
        argv += ["--autoscaler-config", item]
    with run.process(argv, env, elsewhere) as up:
        deadline = time.monotonic() + 150
        while not _at_zero(_revision(run)):
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, f"not ready at zero pods in 150 s: {run.state()} {_revision(run)}"
            time.sleep(0.2)
        t0 = time.monotonic()
        status, body = _get(f"http://127.0.0.1:{run.port}/autoscale/?sleep=10", timeout=60)
        cold = time.monotonic() - t0
        assert (status, "Revision: autoscale-00001.") == (200, body.split("Slept for 10 milliseconds. ")[1].strip())
        print(f"scale from zero through the installed wheel: {cold * 1000:.0f} ms")
        local = [sluice, "local", "--home", str(run.home)]
        shown = _run([*local, "status"], cwd=elsewhere, env=env, timeout=30)
        assert "autoscale" in shown.stdout
        again = _run([*local, "apply", "--example", "autoscale"], cwd=elsewhere, env=env, timeout=60)
        # The same manifest: "configured" or "unchanged" (apply compares with the defaulted spec).
        verb = again.stdout.strip().removeprefix("service.serving.knative.dev/autoscale ")
        assert verb in ("configured", "unchanged"), again.stdout
        _run([*local, "down"], cwd=elsewhere, env=env, timeout=90)
        _, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert "Traceback" not in err and "WARNING" not in err, err
    run.assert_clean()


def test_demo_runs_in_a_clone(clone: Path, installed: Installed, tmp_path: Path) -> None:
    """`./scripts/demo` in the clone, as the README says: bootstrap (a fresh .venv with the pinned
    build requirements) and the whole demo, from zero pods to a burst and back to zero.

    To spare CI a second 1-3 min mypyc build of the same sources with the same pinned tools, the
    clone gets the extensions of the wheel built above: bootstrap then finds them current
    ("up to date"), as it would after its own build; the build itself is the wheel's."""
    run = Run(tmp_path / "run")
    demo = tmp_path / "demo-clone"
    shutil.copytree(clone, demo, symlinks=True)  # its own .venv, not shared with other tests
    assert not (demo.parent / "shared").exists()
    with zipfile.ZipFile(installed.wheel) as wheel:
        for artifact in hatch_build.artifacts():
            (demo / artifact).write_bytes(wheel.read(artifact))
    assert hatch_build.current(demo)
    env = installed.env(run)  # a plain shell: the demo makes and uses its own .venv
    try:
        done = subprocess.run(
            ["./scripts/demo", "--port", str(run.port), "--net", run.net, "--report", str(tmp_path / "demo.png")],
            cwd=demo,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT + 300,
        )
    finally:
        left = run.wait_no_survivors()  # checked after the output, which says more on a failure
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert f"native hot path: up to date ({len(hatch_build.NATIVE_MODULES)} modules, mypyc)" in done.stdout, done.stdout
    # The tools to rebuild after an edit are there (the demo's extras alone lack them).
    tools = "import mypy.version, setuptools; print(mypy.version.__version__, setuptools.__version__)"
    versions = _run([str(demo / ".venv/bin/python"), "-c", tools], timeout=60).stdout.split()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = dict(r.split(";")[0].split("==") for r in requires)
    assert versions == [pins["mypy"], pins["setuptools"]]
    # Nothing of ours on stderr. (This machine's pip configuration names local index folders
    # that do not exist; pip warns about those itself, which is no Sluice warning.)
    ours = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: Location 'file:")]
    assert ours == [], done.stderr
    assert "GET /autoscale/" in done.stdout and "× 200, 0 other" in done.stdout, done.stdout
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert left == []
    assert run.leftover_temp_files() == []  # the demo's own state dir included (it is made in TMPDIR)
