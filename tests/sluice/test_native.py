"""The mypyc-compiled hot path (hatch_build.py, sluice/native.py): CI runs the suite against the
extensions, and a stale or disabled build falls back to the sources, all modules together."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hatch_build
from sluice import native

ROOT = Path(__file__).resolve().parents[2]
BUILT = hatch_build.current(ROOT)
needs_build = pytest.mark.skipif(not BUILT, reason="no current native build (python hatch_build.py)")

PROBE = (
    "import json, proxy.handler, activator.throttler, sluice.http.server, sluice.native as n;"
    "print(json.dumps([n.compiled(m) for m in (proxy.handler, activator.throttler, sluice.http.server)]"
    " + [n.fallback_reason]))"
)


def _modules() -> list[str]:
    return [path.removesuffix(".py").replace("/", ".") for path in hatch_build.NATIVE_MODULES]


def test_ci_runs_the_compiled_hot_path() -> None:
    """scripts/test builds the extensions and requires them: the suite then exercises what ships."""
    if os.environ.get("SLUICE_NATIVE_REQUIRED") != "1":
        pytest.skip("only where the native build is required (scripts/test, CI)")
    assert BUILT, "hatch_build.py's in-place build is missing or stale"
    if os.environ.get("SLUICE_PURE_PYTHON") == "1":
        pytest.skip("this run is the interpreted pass")
    assert native.fallback_reason is None
    for name in _modules():
        assert native.compiled(importlib.import_module(name)), name


def test_artifacts_name_every_module_the_group_and_the_stamp() -> None:
    names = hatch_build.artifacts()
    assert len(names) == len(hatch_build.NATIVE_MODULES) + 2
    assert "sluice/_native.json" in names
    assert any(n.startswith("sluice/_native__mypyc.") for n in names)


def _copy_tree(dest: Path) -> None:
    for package in ("sluice", "proxy", "activator"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))


def _probe(cwd: Path, **env: str) -> tuple[list[object], str]:
    environ = {k: v for k, v in os.environ.items() if k != "SLUICE_PURE_PYTHON"}
    environ.update(env, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    argv = [sys.executable, "-c", PROBE]
    done = subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


@needs_build
def test_a_current_build_loads_the_extensions(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    result, stderr = _probe(tmp_path)
    assert result == [True, True, True, None]
    assert stderr == ""


@needs_build
def test_an_edited_source_loads_every_module_interpreted(tmp_path: Path) -> None:
    """One changed source makes all of them interpreted (the group calls itself natively), with a warning."""
    _copy_tree(tmp_path)
    edited = tmp_path / "sluice" / "breaker.py"
    edited.write_text(edited.read_text() + "\n# an edit after the build\n")
    result, stderr = _probe(tmp_path)
    assert result[:3] == [False, False, False]
    assert "sluice/breaker.py changed since its extension was built" in str(result[3])
    assert "running the interpreted hot path" in stderr


@needs_build
def test_sluice_pure_python_forces_the_sources(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    result, stderr = _probe(tmp_path, SLUICE_PURE_PYTHON="1")
    assert result == [False, False, False, "SLUICE_PURE_PYTHON=1"]
    assert stderr == ""


def test_without_a_build_everything_is_plain_python(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    for path in hatch_build.artifacts():
        (tmp_path / path).unlink(missing_ok=True)
    result, _ = _probe(tmp_path)
    assert result == [False, False, False, None]
