"""The data `sluice local` ships (sluice/local/data): equal to Knative's reference copies, the
pinned commit recorded once, every file loadable, the examples reachable by name, and no code
that looks for `../shared` at run time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sluice.local.data import (
    CONFIGMAP_FILES,
    CRD_FILES,
    EXAMPLES_DIR,
    KNATIVE_DIR,
    PackageDataError,
    example_names,
    example_path,
    example_summaries,
    knative_configmaps,
    knative_serving_commit,
    verify,
)
from sluice.local.manifest import load_manifests
from tests.support import ROOT

# Knative's reference manifests beside the repository (not part of a clone: skipped there).
REFERENCE = ROOT.parent / "shared" / "knative" / "config"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"{REFERENCE} is absent (a clone without ../shared): nothing to compare with"
)


def test_every_shipped_file_loads() -> None:
    verify()
    assert set(knative_configmaps()) == {"config-" + p.stem for p in CONFIGMAP_FILES}
    assert re.fullmatch(r"[0-9a-f]{40}", knative_serving_commit())


def test_the_data_folder_holds_exactly_the_listed_files() -> None:
    """Every file is loaded or documents the data: nothing shipped that nothing reads."""
    shipped = {p.relative_to(KNATIVE_DIR) for p in KNATIVE_DIR.rglob("*") if p.is_file()}
    listed = {p.relative_to(KNATIVE_DIR) for p in (*CRD_FILES, *CONFIGMAP_FILES)}
    assert shipped == listed | {Path("NOTICE"), Path("LICENSE")}
    license_text = (KNATIVE_DIR / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    for path in listed:
        assert "Licensed under the Apache License, Version 2.0" in (KNATIVE_DIR / path).read_text(), path


@needs_reference
def test_packaged_copies_equal_the_reference_manifests() -> None:
    drifted = [
        str(p.relative_to(KNATIVE_DIR))
        for p in (*CRD_FILES, *CONFIGMAP_FILES)
        if p.read_bytes() != (REFERENCE / p.relative_to(KNATIVE_DIR)).read_bytes()
    ]
    assert drifted == [], f"copy these again from {REFERENCE} (and update the commit in NOTICE): {drifted}"


@needs_reference
def test_the_pinned_commit_is_the_reference_one() -> None:
    assert knative_serving_commit() in (REFERENCE / "README.md").read_text()
    assert knative_serving_commit() in (REFERENCE.parent / "CONTRACT.md").read_text()


def test_examples_ship_and_load_by_name() -> None:
    assert {"autoscale", "traffic-split"} <= set(example_names())
    assert [m.name for m in load_manifests([example_path("autoscale")])] == ["autoscale"]
    assert (EXAMPLES_DIR / "autoscale.py").is_file()  # the app the manifest's command runs
    for name in example_names():
        for m in load_manifests([example_path(name)]):
            # `python3`: Debian and others have no `python` command outside a venv.
            commands = [c["command"][0] for c in m.body["spec"]["template"]["spec"]["containers"]]
            assert commands == ["python3"], (name, commands)
    assert dict(example_summaries())["autoscale"]
    with pytest.raises(PackageDataError, match="no example named 'nope' \\(available: autoscale"):
        example_path("nope")


def test_top_level_examples_is_the_packaged_folder() -> None:
    """One copy: the repository's examples/ is a link into the package."""
    assert (ROOT / "examples").is_symlink()
    assert (ROOT / "examples").resolve() == EXAMPLES_DIR


def test_no_code_looks_for_shared_at_run_time() -> None:
    """`../shared` is reference material for people and tests; a string naming it in shipped code
    (docstrings aside) would be a run-time look-up."""
    offenders = []
    for package in ("sluice", "proxy", "activator", "autoscaler"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and re.search(r"(^|/)shared(/|$)", node.value)
            ]
    assert offenders == []
