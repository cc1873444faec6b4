"""The build requirements are complete and pinned: [build-system] requires pins every package
exactly, requirements/build.txt (scripts/lock-build) is the same list with hashes, and the dev
extra builds in place with the same tools."""

from __future__ import annotations

import re
import tomllib

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements" / "build.txt"


def _split(requirement: str) -> tuple[str, str, str]:
    spec, _, marker = requirement.partition(";")
    name, _, version = spec.strip().partition("==")
    return re.sub(r"[-_.]+", "-", name).lower(), version.strip(), " ".join(marker.split())


def test_every_build_requirement_is_pinned_exactly() -> None:
    for requirement in PYPROJECT["build-system"]["requires"]:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*( *;.*)?", requirement), requirement


def test_lock_file_equals_the_build_system_pins_and_has_hashes() -> None:
    entries = re.split(r"\n(?=\S)", "\n".join(ln for ln in LOCK.read_text().splitlines() if not ln.startswith("#")))
    locked = {}
    for entry in filter(str.strip, entries):
        head, *hashes = [part.strip() for part in entry.replace("\\\n", "\n").splitlines()]
        assert hashes and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes), entry
        name, version, marker = _split(head)
        locked[name] = (version, marker)
    pinned = {name: (version, marker) for name, version, marker in map(_split, PYPROJECT["build-system"]["requires"])}
    assert locked == pinned, "run scripts/lock-build after changing [build-system] requires"


def test_the_dev_extra_builds_with_the_same_tools() -> None:
    pinned = {name: version for name, version, _ in map(_split, PYPROJECT["build-system"]["requires"])}
    dev = {name: version for name, version, _ in map(_split, PYPROJECT["project"]["optional-dependencies"]["dev"])}
    for tool in ("hatchling", "mypy", "setuptools"):
        assert dev[tool] == pinned[tool], tool
    # The typed libraries mypyc checks the hot path against are runtime dependencies too.
    for library in ("h2", "httptools", "uvloop"):
        assert library in pinned
