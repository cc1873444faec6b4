"""Whether the mypyc-compiled hot path is loaded, and the guard that keeps it honest.

`hatch_build.py` compiles the hot-path modules into C extensions that sit next to
their sources, where Python's import system prefers them. It records each source's
SHA-256 in `sluice/_native.json`. This module runs from `sluice/__init__.py`, before
any of those modules can be imported, and loads the sources instead of *all* the
extensions (they are one group and call each other directly, so it is all or none)
when a source no longer matches its extension, or when SLUICE_PURE_PYTHON=1.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["compiled", "fallback_reason", "mypyc_attr"]

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:

    def mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:
        """mypyc reads the real decorator (by name, at compile time); interpreted, it is a no-op,
        so mypy_extensions is not a runtime dependency."""
        return lambda cls: cls


# Every process imports this module first, so it stays off importlib.abc and pathlib (their
# imports cost ~25 ms of start-up; measured with -X importtime), and loads hashlib and
# importlib.util only when there is a build to check (2.3 ms and 0.7 MB per queue-proxy, issue 19).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds sluice, proxy, activator
_STAMP = os.path.join(_ROOT, "sluice", "_native.json")

fallback_reason: str | None = None
"""Why built extensions are not used (None when they are, or when there are none)."""


class _SourcesFirst:
    """A meta path finder (sys.meta_path needs only `find_spec`): the listed modules as their
    `.py` sources, ahead of any extension."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(fullname, source)


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _guard() -> None:
    global fallback_reason
    try:
        with open(_STAMP, encoding="utf-8") as stamp:
            recorded: dict[str, str] = json.load(stamp)["modules"]
    except FileNotFoundError:
        return  # nothing was compiled: plain Python
    except (OSError, ValueError, KeyError, TypeError) as exc:
        recorded = {}
        fallback_reason = f"{_STAMP} is unreadable ({exc})"
    if fallback_reason is None and os.environ.get("SLUICE_PURE_PYTHON") == "1":
        fallback_reason = "SLUICE_PURE_PYTHON=1"
    if fallback_reason is None:
        import hashlib

        for path, digest in recorded.items():
            try:
                with open(os.path.join(_ROOT, path), "rb") as source:
                    changed = hashlib.sha256(source.read()).hexdigest() != digest
            except OSError:
                changed = True
            if changed:
                fallback_reason = f"{path} changed since its extension was built (rebuild: python hatch_build.py)"
                sys.stderr.write(f"sluice: running the interpreted hot path: {fallback_reason}\n")
                break
    if fallback_reason is not None:
        sources = {_module_name(path): os.path.join(_ROOT, path) for path in recorded}
        sys.meta_path.insert(0, _SourcesFirst(sources))


def compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from a compiled extension."""
    return str(getattr(module, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


_guard()
