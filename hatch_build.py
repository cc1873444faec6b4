"""Compiles the request hot path with mypyc: the same typed Python, as C extensions.

The queue-proxy and the activator spend most of a request's user-space time interpreting
the engine's bytecode (bench/RESULTS.md). mypyc turns these modules, unchanged, into C
extensions: attribute access on their classes becomes a struct field, calls between them
direct C calls. The sources stay the reference; the extensions are an accelerator
that must behave identically, so CI runs the whole suite against them.

Two ways in, one build:

- `python hatch_build.py` (scripts/bootstrap and scripts/test run it): builds in place,
  each extension next to its source, where an editable install imports it first.
- hatchling runs `NativeBuildHook` for a wheel (the images' builder stage): the wheel
  carries the extensions, or the ones already built in place when they are current.

Both write `sluice/_native.json`, the SHA-256 of every compiled source. At import,
`sluice.native` checks it and loads the sources instead of all the extensions if any
source changed since (a stale extension must never shadow an edit), or when
SLUICE_PURE_PYTHON=1. SLUICE_NATIVE=0 skips building altogether.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

# The modules every proxied request runs through (queue-proxy, activator, the engine they share).
# They import each other; they are compiled as one group and loaded all or none.
NATIVE_MODULES = (
    "sluice/breaker.py",
    "sluice/http/outbox.py",
    "sluice/http/headers.py",
    "sluice/http/deadlines.py",
    "sluice/http/server.py",
    "sluice/http/client.py",
    "sluice/http/forward.py",
    "sluice/http/h2hpack.py",
    "sluice/http/h2conn.py",
    "sluice/http/h2server.py",
    "sluice/http/h2client.py",
    "proxy/handler.py",
    "proxy/stats.py",
    "activator/handler.py",
    "activator/throttler.py",
    "activator/stats.py",
)
GROUP = "sluice._native"  # the shared library: sluice/_native__mypyc.<abi>.so
STAMP = "sluice/_native.json"


def source_digests(root: Path = ROOT) -> dict[str, str]:
    return {path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in NATIVE_MODULES}


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def artifacts() -> list[str]:
    """Paths (relative to the root) of the files a build produces."""
    suffix = _suffix()
    libs = [path[: -len(".py")] + suffix for path in NATIVE_MODULES]
    return [*libs, GROUP.replace(".", "/") + "__mypyc" + suffix, STAMP]


def current(root: Path = ROOT) -> bool:
    """Whether the in-place build matches the sources."""
    stamp = root / STAMP
    if not all((root / path).exists() for path in artifacts()):
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded.get("modules") == source_digests(root))


def build(out: Path, root: Path = ROOT) -> list[str]:
    """Compiles NATIVE_MODULES into `out` (laid out like the packages), writes the stamp
    there, and returns the artifacts' relative paths. Needs mypy, setuptools and a C compiler."""
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RuntimeError(f"the native build needs mypy and setuptools (the dev extra): {exc}") from exc

    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        raise RuntimeError(f"{include} is missing: install the Python headers (Debian: python3-dev)")
    digests = source_digests(root)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="sluice-mypyc-") as tmp:
        os.chdir(root)  # mypyc names modules after their paths relative to the working directory
        try:
            # mypyc prints its notes (e.g. "Treating generator comprehension as list") on
            # stdout: shown only when the build fails, so a working build prints no warnings.
            notes = io.StringIO()
            try:
                with contextlib.redirect_stdout(notes):
                    extensions = mypycify(
                        list(NATIVE_MODULES), opt_level="3", group_name=GROUP, target_dir=str(Path(tmp) / "c")
                    )
            except SystemExit as exc:  # mypyc exits on type errors
                raise RuntimeError(f"mypyc failed:\n{notes.getvalue().strip()}") from exc
            dist = Distribution({"name": "sluice-native", "ext_modules": extensions})
            cmd: Any = dist.get_command_obj("build_ext")
            cmd.build_lib = str(out)
            cmd.build_temp = str(Path(tmp) / "obj")
            cmd.inplace = False
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
    (out / STAMP).parent.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text(json.dumps({"group": GROUP, "modules": digests}, indent=1, sort_keys=True) + "\n")
    missing = [path for path in artifacts() if not (out / path).exists()]
    if missing:
        raise RuntimeError(f"the mypyc build did not produce {missing}")
    return artifacts()


def build_in_place(root: Path = ROOT) -> bool:
    """Builds next to the sources unless already current; True when something was built."""
    if current(root):
        return False
    with tempfile.TemporaryDirectory(prefix="sluice-native-") as tmp:
        for path in build(Path(tmp), root):
            shutil.copy2(Path(tmp) / path, root / path)
    return True


def remove_in_place(root: Path = ROOT) -> None:
    for path in artifacts():
        (root / path).unlink(missing_ok=True)


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script without hatchling: only the in-place build is needed
    pass
else:

    class NativeBuildHook(BuildHookInterface[Any]):
        """hatchling's custom build hook: a platform wheel with the extensions."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            if self.target_name != "wheel" or version == "editable" or os.environ.get("SLUICE_NATIVE") == "0":
                return
            root = Path(self.root)
            self._tmp: tempfile.TemporaryDirectory[str] | None = None
            if current(root):
                out = root
                paths = artifacts()
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="sluice-wheel-native-")
                out = Path(self._tmp.name)
                paths = build(out, root)
            for path in paths:
                build_data["force_include"][str(out / path)] = path
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

        def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
            tmp = getattr(self, "_tmp", None)  # absent when initialize() returned early
            if tmp is not None:
                tmp.cleanup()  # the wheel holds the extensions now


def main(argv: list[str]) -> int:
    if argv[1:] == ["--clean"]:
        remove_in_place()
        return 0
    if argv[1:] == ["--check"]:
        return 0 if current() else 1
    if argv[1:]:
        print("usage: python hatch_build.py [--check | --clean]", file=sys.stderr)
        return 2
    if os.environ.get("SLUICE_NATIVE") == "0":
        remove_in_place()
        print("SLUICE_NATIVE=0: hot path left interpreted (no extensions)")
        return 0
    try:
        built = build_in_place()
    except Exception as exc:  # a missing compiler shows up as a CompileError deep in setuptools
        print(f"native hot path: build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("native hot path: " + ("built" if built else "up to date") + f" ({len(NATIVE_MODULES)} modules, mypyc)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
