"""Keeps hand-chained timers out of the code: `handle.when()` is what froze the Stat after a stall
(uvloop returns a `Handle` without `when()` for a past time). Periodic work uses `sluice.periodic`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sluice", "proxy", "activator", "autoscaler")


def when_calls(source: str) -> list[int]:
    """Lines with a `<anything>.when()` call (no arguments: a timer handle's deadline)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "when"
        and not node.args
        and not node.keywords
    ]


def test_no_handle_when_in_the_code() -> None:
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n in when_calls(path.read_text())]
    assert not offenders, "use sluice.periodic instead of chaining handle.when(): " + ", ".join(offenders)


def test_the_lint_sees_the_pattern() -> None:
    assert when_calls("loop.call_at(self._tick_handle.when() + PERIOD, self._tick)") == [1]
    assert when_calls("'''handle.when() in a docstring'''") == []
