"""kubernetes-asyncio without the modules the components never use (issue 19, per-pod cost).

`import kubernetes_asyncio.<anything>` runs the package's `__init__`, which imports all of it:
`client/__init__.py` imports 1,536 generated model modules and 138 API classes, the top package
the `dynamic` client with `kubernetes_validate` and `jsonschema`, `config` the kubeconfig loader
with `yaml`. That is ~1,100 modules and ~33 MB of RSS in every activator and autoscaler, which
touch none of it: they speak raw JSON (`rawjson.py`) through `ApiClient` and a handful of API
classes (measured in bench/RESULTS.md, issue 19).

`install()` puts the four package modules in `sys.modules` without running their `__init__`, so
that importing a submodule (`kubernetes_asyncio.client.api.core_v1_api`) loads that submodule and
what it imports, nothing else. A name the package's `__init__` defines is still there when asked
for (`from kubernetes_asyncio.client import V1Pod`, `client.CoreV1Api`, the `ApiClient`'s
deserializer looking up a model class): it is resolved from the `from X import Name` line of the
`__init__` that defines it, or, for anything else, by running the whole `__init__` into the module
once — what a plain import would have done up front. So code written against the full package keeps
working in the same process, it just pays for what it uses.

Importing this module installs them (`sluice.kube` imports it first); a no-op when
kubernetes_asyncio was already imported the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from typing import Any

__all__ = ["DEFERRED", "api_class", "install"]

# The packages whose __init__ imports far more than the components use.
DEFERRED = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
    "kubernetes_asyncio.config",
)

_FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+(\w+)\s*$", re.MULTILINE)


class _DeferredPackage(types.ModuleType):
    """A package module whose `__init__` has not run; names are resolved on first access."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        # A dunder (`__version__`, `__all__`) is only what the whole `__init__` defines.
        module = None
        if not name.startswith("__"):
            submodule = f"{self.__name__}.{name}"
            if importlib.util.find_spec(submodule) is not None:
                state[name] = imported = importlib.import_module(submodule)
                return imported
            sources: dict[str, str] | None = state.get("_sluice_sources")
            if sources is None:
                text = spec.loader.get_source(spec.name) or ""  # type: ignore[attr-defined]
                sources = {imported: module for module, imported in _FROM_IMPORT.findall(text)}
                state["_sluice_sources"] = sources
            module = sources.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        else:
            if not state.get("_sluice_complete"):
                state["_sluice_complete"] = True
                exec(spec.loader.get_code(spec.name), state)  # type: ignore[attr-defined]
            if name not in state:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
            value = state[name]
        state[name] = value
        return value


def install() -> None:
    """Registers the deferred packages (idempotent; nothing to do if they are imported already)."""
    for name in DEFERRED:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            return  # kubernetes-asyncio is not installed: the ordinary ImportError comes later
        module = _DeferredPackage(name)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = name
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def api_class(module: str, name: str) -> Any:
    """`kubernetes_asyncio.client.api.<module>.<name>`, importing that API module alone."""
    install()
    return getattr(importlib.import_module(f"kubernetes_asyncio.client.api.{module}"), name)


install()
