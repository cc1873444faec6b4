"""Helpers for the chart, manifest and image checks: running tools/helm and kubernetes-validate offline,
loading the stock Knative manifests from ../shared, a field-by-field diff of Kubernetes objects and a
structural validator for CRD-defined kinds that kubernetes-validate does not know."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Copies of the stock Knative manifests the renders are compared with (tests/charts/knative/NOTICE):
# a clone without ../shared runs these tests too; test_stock_copies.py checks them for drift.
STOCK_CONFIG = Path(__file__).resolve().parent / "knative"
CHART = ROOT / "charts" / "sluice"
HELM = ROOT / "tools" / "helm"
KUBECTL = ROOT / "tools" / "kubectl"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
NAMESPACE = "knative-serving"

# The Kubernetes version every render is validated against: Knative Serving's minimum at the commit of
# ../shared/knative (CONTRACT.md header). kubernetes-validate ships schemas 1.25–1.37 (scripts/install-tools).
KUBE_VERSION = "1.30.0"

# Kinds defined by Knative CRDs that the chart may render, with the CRD manifest that defines them.
# kubernetes-validate has no schema for them (it would only warn), so they are checked against the CRD's
# openAPIV3Schema instead (crd_errors below).
CRD_KINDS: dict[tuple[str, str], Path] = {
    ("caching.internal.knative.dev/v1alpha1", "Image"): STOCK_CONFIG / "300-imagecache.yaml",
}

Obj = dict[str, Any]

needs_helm = pytest.mark.skipif(not HELM.is_file(), reason="tools/helm is missing: run scripts/install-tools")
needs_kubectl = pytest.mark.skipif(not KUBECTL.is_file(), reason="tools/kubectl is missing: run scripts/install-tools")
needs_validator = pytest.mark.skipif(
    not KUBERNETES_VALIDATE.is_file(), reason="kubernetes-validate is not in the venv: run scripts/install-tools"
)


def _helm_env() -> dict[str, str]:
    # Hermetic: no user config, cache or plugins, no cluster.
    home = Path(tempfile.gettempdir()) / "sluice-chart-tests-helm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=os.devnull,
    )
    return env


def run(
    args: Iterable[str | Path], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run([HELM, *args], env=_helm_env())


def template_args(*values_files: Path, sets: Iterable[str] = (), namespace: str = NAMESPACE) -> list[str | Path]:
    args: list[str | Path] = ["template", "sluice", CHART, "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["--values", f]
    for s in sets:
        args += ["--set", s]
    return args


@cache
def render_text(*values_files: Path, sets: tuple[str, ...] = ()) -> str:
    result = helm(*template_args(*values_files, sets=sets))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(*values_files: Path, sets: tuple[str, ...] = ()) -> list[Obj]:
    return docs(render_text(*values_files, sets=sets))


def find(objs: Iterable[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def stock(relative: str, kind: str, name: str) -> Obj:
    """An object from the stock Knative manifests (tests/charts/knative, copied from ../shared)."""
    return find(docs((STOCK_CONFIG / relative).read_text()), kind, name)


def validate(objs: list[Obj], tmp: Path) -> None:
    """kubernetes-validate --strict for the built-in kinds, the CRD schema for Knative kinds; fails on
    anything else (kubernetes-validate merely warns about kinds it has no schema for)."""
    builtin = [o for o in objs if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    path = tmp / "render.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    result = run([KUBERNETES_VALIDATE, "--strict", "--kubernetes-version", KUBE_VERSION, path])
    problems = [line for line in result.stdout.splitlines() if not line.startswith("INFO ")]
    assert result.returncode == 0 and not problems, f"kubernetes-validate:\n{result.stdout}{result.stderr}"
    assert result.stdout.count("INFO ") == len(builtin)
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_KINDS:
            errors = crd_errors(obj, crd_schema(*key))
            assert not errors, f"{obj['kind']} {obj['metadata']['name']} against its CRD: {errors}"


@cache
def crd_schema(api_version: str, kind: str) -> Obj:
    group, version = api_version.split("/")
    crd = docs(CRD_KINDS[(api_version, kind)].read_text())[0]
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema: Obj = served["schema"]["openAPIV3Schema"]
    return schema


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "integer": (int,), "number": (int, float)}


def crd_errors(value: Any, schema: Obj, path: str = "") -> list[str]:
    """Structural-schema check as the API server does it with strict field validation: types, required
    fields and unknown fields (which it would otherwise prune silently)."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path or '.'}: expected an object"]
        properties: Obj | None = schema.get("properties")
        additional = schema.get("additionalProperties")
        errors = [f"{path}.{r}: required" for r in schema.get("required", []) if r not in value]
        for key, item in value.items():
            if properties is not None and key in properties:
                errors += crd_errors(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, dict):
                errors += crd_errors(item, additional, f"{path}.{key}")
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        return [e for i, item in enumerate(value) for e in crd_errors(item, schema.get("items", {}), f"{path}[{i}]")]
    if kind in _TYPES and (not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{path}: expected {kind}, got {value!r}"]
    return []


def _segment(key: str) -> str:
    return f"[{key}]" if any(c in key for c in "./") else f".{key}"


def diff(stock_value: Any, rendered: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    """Every leaf where two objects differ: {path: (stock, rendered)}, missing = None. Lists of named items
    (containers, env, ports) are matched by name, so a reordering is not a difference but a rename is. A
    missing mapping counts as empty, so an added annotation is reported as that annotation's path."""
    if isinstance(stock_value, dict) and rendered is None:
        rendered = {}
    elif stock_value is None and isinstance(rendered, dict):
        stock_value = {}
    if isinstance(stock_value, dict) and isinstance(rendered, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(stock_value) | set(rendered)):
            sub = f"{path}{_segment(key)}" if path else key
            out.update(diff(stock_value.get(key), rendered.get(key), sub))
        return out
    if isinstance(stock_value, list) and isinstance(rendered, list):
        if _named(stock_value) and _named(rendered):
            a = {i["name"]: i for i in stock_value}
            b = {i["name"]: i for i in rendered}
            out = {}
            for name in sorted(set(a) | set(b)):
                out.update(diff(a.get(name), b.get(name), f"{path}[{name}]"))
            return out
        if len(stock_value) == len(rendered):
            out = {}
            for i, (x, y) in enumerate(zip(stock_value, rendered, strict=True)):
                out.update(diff(x, y, f"{path}[{i}]"))
            return out
    return {} if stock_value == rendered else {path: (stock_value, rendered)}


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)
