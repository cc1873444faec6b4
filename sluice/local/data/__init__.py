"""What `sluice local` ships as data, so that a clone or an installed wheel works on its own
(nothing reads `../shared` at run time, ARCHITECTURE.md):

- `knative/`: Knative Serving's CRDs (served by the embedded API) and ConfigMaps (their
  `_example` blocks document the defaults), verbatim, with Knative's Apache-2.0 LICENSE and a
  NOTICE that records the pinned knative/serving commit in one place (`knative_serving_commit()`).
  tests/package/test_data.py compares them with `../shared/knative/config` and fails on drift.
- `examples/`: the sample Services and the app they run (`sluice local up --example autoscale`);
  the repository's top-level `examples` is a link to it, so there is one copy.

A missing or corrupt file raises `PackageDataError` naming the file and what is wrong.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

__all__ = [
    "CONFIGMAP_FILES",
    "CRD_FILES",
    "EXAMPLES_DIR",
    "KNATIVE_DIR",
    "NOTICE",
    "PackageDataError",
    "example_names",
    "example_path",
    "example_summaries",
    "knative_configmaps",
    "knative_serving_commit",
    "verify",
]

DATA_DIR = Path(__file__).resolve().parent
KNATIVE_DIR = DATA_DIR / "knative"
NOTICE = KNATIVE_DIR / "NOTICE"
EXAMPLES_DIR = DATA_DIR / "examples"

# The CRD files loaded into the embedded API, and the resources (plurals) they must define: the
# controller, the activator and the autoscaler list and watch every one of them.
CRD_FILES = tuple(
    KNATIVE_DIR / "300-resources" / f"{stem}.yaml"
    for stem in ("service", "configuration", "revision", "route", "podautoscaler", "metric", "serverlessservice")
)
CRD_PLURALS = frozenset(
    {"services", "configurations", "revisions", "routes", "podautoscalers", "metrics", "serverlessservices"}
)
# configmaps/<stem>.yaml holds ConfigMap `config-<stem>`.
CONFIGMAP_FILES = tuple(
    KNATIVE_DIR / "configmaps" / f"{stem}.yaml"
    for stem in (
        "autoscaler",
        "defaults",
        "deployment",
        "features",
        "leader-election",
        "logging",
        "network",
        "observability",
    )
)

_COMMIT = re.compile(r"^knative/serving commit: ([0-9a-f]{40})$", re.MULTILINE)


class PackageDataError(Exception):
    """A shipped data file is missing or unreadable; the message names it and says what is wrong."""


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())  # YAML errors span lines; the CLI prints one message


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PackageDataError(f"{path}: {reason} (the installation is incomplete; reinstall knative-sluice)") from None


@lru_cache(maxsize=1)
def knative_serving_commit() -> str:
    """The knative/serving commit the shipped manifests (and CONTRACT.md) are taken from."""
    found = _COMMIT.search(_read(NOTICE))
    if found is None:
        raise PackageDataError(f"{NOTICE}: no 'knative/serving commit: <40 hex digits>' line")
    return found.group(1)


@lru_cache(maxsize=1)
def knative_configmaps() -> dict[str, dict[str, str]]:
    """`data` of each shipped ConfigMap by name (Knative ships only `_example` keys, which
    document the defaults: the components apply the same defaults when a key is absent)."""
    out: dict[str, dict[str, str]] = {}
    for path in CONFIGMAP_FILES:
        name = "config-" + path.stem
        try:
            docs = [d for d in yaml.safe_load_all(_read(path)) if d]
        except yaml.YAMLError as exc:
            raise PackageDataError(f"{path}: not valid YAML: {_one_line(exc)}") from None
        maps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
        if len(maps) != 1 or (maps[0].get("metadata") or {}).get("name") != name:
            raise PackageDataError(f"{path}: expected one ConfigMap named {name}")
        data = maps[0].get("data") or {}
        if not isinstance(data, dict):
            raise PackageDataError(f"{path}: data of {name} is not a mapping")
        out[name] = {str(k): str(v) for k, v in data.items()}
    return out


def verify() -> None:
    """Loads every shipped CRD and ConfigMap, as `sluice local up` does before starting anything:
    a missing file, a file that is not YAML or a CRD the API server refuses raises
    PackageDataError with one message."""
    from ..kubeapi.crd import CRDError, load_crd_files

    try:
        types = load_crd_files(CRD_FILES)
    except CRDError as exc:
        raise PackageDataError(_one_line(exc)) from None
    missing = CRD_PLURALS - {t.plural for t in types}
    if missing:
        raise PackageDataError(f"{KNATIVE_DIR / '300-resources'}: no CRD defines {', '.join(sorted(missing))}")
    knative_configmaps()
    knative_serving_commit()


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))


def example_path(name: str) -> Path:
    """The manifest of a shipped example (`autoscale`, `traffic-split`)."""
    path = EXAMPLES_DIR / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(example_names()) or "none: the installation is incomplete"
        raise PackageDataError(f"no example named {name!r} (available: {names})")
    return path


def example_summaries() -> list[tuple[str, str]]:
    """(name, first comment line) of each example, for `--example list`."""
    out = []
    for name in example_names():
        lines = _read(example_path(name)).splitlines()
        first = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else ""
        out.append((name, first.split(". ")[0].rstrip(".")))
    return out
