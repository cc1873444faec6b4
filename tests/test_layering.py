"""Rules of the house (ARCHITECTURE.md): component packages never import each other,
`sluice` imports none of them, and the queue-proxy entry point stays free of the heavy
libraries (its start-up time and memory are paid in every revision pod)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("proxy", "activator", "autoscaler")


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _package_imports(package: str) -> dict[Path, set[str]]:
    base = ROOT / package
    return {p: _imported_top_levels(p) for p in base.rglob("*.py")} if base.is_dir() else {}


def test_components_do_not_import_each_other() -> None:
    for component in COMPONENTS:
        for path, names in _package_imports(component).items():
            forbidden = names & (set(COMPONENTS) - {component})
            assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_shared_core_imports_no_component() -> None:
    for path, names in _package_imports("sluice").items():
        forbidden = names & set(COMPONENTS)
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_layering_walk_sees_real_files() -> None:
    # Guards the two tests above against passing vacuously.
    assert len(_package_imports("sluice")) > 3
    assert len(_package_imports("proxy")) > 1


def test_queue_proxy_entry_point_stays_light() -> None:
    code = (
        "import sys, proxy.__main__\n"
        "heavy = [m for m in ('aiohttp', 'kubernetes_asyncio', 'yaml') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"proxy.__main__ loads {out.stdout.strip()}"
