"""Loading and validating `serving.knative.dev/v1` Service manifests for `sluice local`.

What the API server and Knative's webhook would reject is rejected here, before anything starts,
with the field path and the reason (`spec.template.spec.containerConcurrency: must be in [0, 1000],
got 5000`): fields the Service CRD schema does not know (kubectl's default `fieldValidation=Strict`),
and the `autoscaling.knative.dev/*` annotations with the webhook's messages (`webhook.py`). On top
of that `sluice local` has its own limits: the container runs as a local process, so it needs a
`command`, and a revision has exactly one container.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .kubeapi import default_crd_dir
from .kubeapi.crd import load_crd_files
from .kubeapi.schema import unknown_fields
from .webhook import MAX_CONTAINER_CONCURRENCY, MAX_REVISION_TIMEOUT, knative_errors

__all__ = ["Manifest", "ManifestError", "load_manifests", "missing_command", "validate_service"]

API_VERSION = "serving.knative.dev/v1"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
FIELD_REFS = frozenset({"metadata.name", "metadata.namespace", "status.podIP", "status.hostIP", "spec.nodeName"})


class ManifestError(ValueError):
    """Every problem found, each as `<source>: <field path>: <reason>`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid manifest:\n  " + "\n  ".join(problems))


@dataclass(slots=True)
class Manifest:
    source: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"].get("namespace") or "default")


@dataclass(slots=True)
class _Errors:
    items: list[str] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.items.append(f"{path}: {reason}")


def load_manifests(paths: Iterable[str | Path]) -> list[Manifest]:
    """Reads every YAML document of every file; raises `ManifestError` listing all problems."""
    problems: list[str] = []
    out: list[Manifest] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {exc}")
            continue
        if not docs:
            problems.append(f"{path}: no document found")
        for index, doc in enumerate(docs):
            source = f"{path}" if len(docs) == 1 else f"{path}[{index}]"
            errors = validate_service(doc)
            problems += [f"{source}: {e}" for e in errors]
            if not errors:
                out.append(Manifest(source, doc))
    seen: dict[tuple[str, str], str] = {}
    for m in out:
        key = (m.namespace, m.name)
        if key in seen:
            problems.append(f"{m.source}: metadata.name: service {m.namespace}/{m.name} also defined in {seen[key]}")
        seen[key] = m.source
    if problems:
        raise ManifestError(problems)
    return out


def validate_service(doc: Any) -> list[str]:
    """Problems of one Service document, as `<field path>: <reason>` (empty when valid)."""
    err = _Errors()
    if not isinstance(doc, dict):
        err.add("(document)", f"expected a mapping, got {type(doc).__name__}")
        return err.items
    if doc.get("apiVersion") != API_VERSION:
        err.add("apiVersion", f"must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "Service":
        err.add("kind", f"must be 'Service', got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    name = ""
    if not isinstance(meta, dict):
        err.add("metadata", "required")
    else:
        name = _check_name(err, "metadata.name", meta.get("name"), _DNS1035, required=True)
        if meta.get("namespace") is not None:
            _check_name(err, "metadata.namespace", meta.get("namespace"), _DNS1123, required=True)
        _check_string_map(err, "metadata.labels", meta.get("labels"))
        _check_string_map(err, "metadata.annotations", meta.get("annotations"))
    _check_unknown_fields(err, doc)
    _check_webhook(err, doc)
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        err.add("spec", "required")
        return err.items
    template = spec.get("template")
    if not isinstance(template, dict):
        err.add("spec.template", "required")
    else:
        _check_template(err, "spec.template", template, name)
    if "traffic" in spec:
        _check_traffic(err, "spec.traffic", spec["traffic"], name)
    return err.items


def _check_name(err: _Errors, path: str, value: Any, pattern: re.Pattern[str], required: bool) -> str:
    if value is None or value == "":
        if required:
            err.add(path, "required")
        return ""
    if not isinstance(value, str) or len(value) > 63 or not pattern.match(value):
        err.add(path, f"{value!r} must be a lowercase RFC 1035/1123 label (a-z, 0-9, '-', at most 63 characters)")
        return ""
    return value


def _check_string_map(err: _Errors, path: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        err.add(path, "must be a mapping of strings")
        return
    for k, v in value.items():
        if not isinstance(v, str):
            err.add(f"{path}[{k}]", f"must be a string, got {type(v).__name__} (quote it in YAML)")


def _check_template(err: _Errors, path: str, template: dict[str, Any], svc: str) -> None:
    meta = template.get("metadata") or {}
    if not isinstance(meta, dict):
        err.add(f"{path}.metadata", "must be a mapping")
        meta = {}
    rev_name = meta.get("name")
    valid_name = rev_name is not None and _check_name(err, f"{path}.metadata.name", rev_name, _DNS1035, True)
    if valid_name and svc and not str(rev_name).startswith(f"{svc}-"):
        err.add(f"{path}.metadata.name", f"{rev_name!r} must have prefix {svc + '-'!r}")
    _check_string_map(err, f"{path}.metadata.labels", meta.get("labels"))
    _check_string_map(err, f"{path}.metadata.annotations", meta.get("annotations"))
    spec = template.get("spec")
    if not isinstance(spec, dict):
        err.add(f"{path}.spec", "required")
        return
    sp = f"{path}.spec"
    cc = _int_field(err, f"{sp}.containerConcurrency", spec.get("containerConcurrency"), 0, MAX_CONTAINER_CONCURRENCY)
    del cc
    timeout = _int_field(err, f"{sp}.timeoutSeconds", spec.get("timeoutSeconds"), 0, MAX_REVISION_TIMEOUT)
    limit = timeout if timeout is not None and timeout > 0 else MAX_REVISION_TIMEOUT
    for key in ("responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        _int_field(err, f"{sp}.{key}", spec.get(key), 0, limit, what="timeoutSeconds" if timeout else None)
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        err.add(f"{sp}.containers", "required: exactly one container")
        return
    if len(containers) > 1:
        err.add(f"{sp}.containers", f"sluice local runs one container per revision, got {len(containers)}")
    for i, c in enumerate(containers[:1]):
        _check_container(err, f"{sp}.containers[{i}]", c)


def _int_field(err: _Errors, path: str, value: Any, low: int, high: int, what: str | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        err.add(path, f"must be an integer, got {value!r}")
        return None
    if not low <= value <= high:
        bound = f"{what} ({high})" if what else str(high)
        err.add(path, f"must be in [{low}, {bound}], got {value}")
        return None
    return value


def _check_container(err: _Errors, path: str, c: Any) -> None:
    if not isinstance(c, dict):
        err.add(path, "must be a mapping")
        return
    command = c.get("command")
    if command is None:
        err.add(f"{path}.command", missing_command(str(c.get("image", ""))))
    else:
        _check_str_list(err, f"{path}.command", command, non_empty=True)
    if c.get("args") is not None:
        _check_str_list(err, f"{path}.args", c.get("args"), non_empty=False)
    if c.get("workingDir") is not None and not isinstance(c.get("workingDir"), str):
        err.add(f"{path}.workingDir", "must be a string")
    _check_env(err, f"{path}.env", c.get("env"))
    ports = c.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            err.add(f"{path}.ports", "must be a list")
        elif len(ports) > 1:
            err.add(f"{path}.ports", "more than one container port is not allowed (Knative)")
        else:
            for i, p in enumerate(ports):
                pp = f"{path}.ports[{i}]"
                if not isinstance(p, dict):
                    err.add(pp, "must be a mapping")
                    continue
                _int_field(err, f"{pp}.containerPort", p.get("containerPort"), 1, 65535)
                if p.get("name") not in (None, "", "http1", "h2c"):
                    err.add(f"{pp}.name", f"must be 'http1' or 'h2c', got {p.get('name')!r}")
                if p.get("containerPort") in (8012, 8013, 8022, 8112, 9090, 9091):
                    err.add(f"{pp}.containerPort", f"{p.get('containerPort')} is reserved for the queue-proxy")
    for key in ("livenessProbe", "startupProbe"):
        if c.get(key) is not None:
            _check_probe(err, f"{path}.{key}", c.get(key))
    if c.get("readinessProbe") is not None:
        _check_probe(err, f"{path}.readinessProbe", c.get("readinessProbe"))


def missing_command(image: str) -> str:
    """Why an image-only container cannot run here (also the Revision's ContainerMissing message)."""
    return f"required: sluice local runs the container as a local process (image {image!r} is not pulled)"


def _check_str_list(err: _Errors, path: str, value: Any, non_empty: bool) -> None:
    if not isinstance(value, list) or (non_empty and not value):
        err.add(path, "must be a non-empty list of strings" if non_empty else "must be a list of strings")
        return
    for i, item in enumerate(value):
        if not isinstance(item, str):
            err.add(f"{path}[{i}]", f"must be a string, got {item!r}")


def _check_env(err: _Errors, path: str, env: Any) -> None:
    if env is None:
        return
    if not isinstance(env, list):
        err.add(path, "must be a list")
        return
    for i, e in enumerate(env):
        ep = f"{path}[{i}]"
        if not isinstance(e, dict):
            err.add(ep, "must be a mapping")
            continue
        name = e.get("name")
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            err.add(f"{ep}.name", f"{name!r} is not a valid environment variable name")
        if "value" in e and not isinstance(e["value"], str):
            err.add(f"{ep}.value", f"must be a string, got {e['value']!r} (quote it in YAML)")
        source = e.get("valueFrom")
        if source is not None:
            field_ref = source.get("fieldRef") if isinstance(source, dict) else None
            if not isinstance(field_ref, dict) or field_ref.get("fieldPath") not in FIELD_REFS:
                err.add(f"{ep}.valueFrom", f"sluice local supports only fieldRef of {sorted(FIELD_REFS)}")


def _check_probe(err: _Errors, path: str, probe: Any) -> None:
    if not isinstance(probe, dict):
        err.add(path, "must be a mapping")
        return
    handlers = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if probe.get(k) is not None]
    if len(handlers) > 1:
        err.add(path, f"expected exactly one of httpGet, tcpSocket, exec, grpc, got {', '.join(handlers)}")
    for key in ("periodSeconds", "timeoutSeconds", "initialDelaySeconds", "successThreshold", "failureThreshold"):
        _int_field(err, f"{path}.{key}", probe.get(key), 0, 3600)
    http = probe.get("httpGet")
    if http is not None:
        if not isinstance(http, dict):
            err.add(f"{path}.httpGet", "must be a mapping")
        else:
            port = http.get("port")
            if port is not None and (isinstance(port, bool) or not isinstance(port, (int, str))):
                err.add(f"{path}.httpGet.port", f"must be a port number or name, got {port!r}")
            if http.get("scheme") not in (None, "HTTP", "HTTPS"):
                err.add(f"{path}.httpGet.scheme", f"must be HTTP or HTTPS, got {http.get('scheme')!r}")
    ex = probe.get("exec")
    if ex is not None:
        if not isinstance(ex, dict):
            err.add(f"{path}.exec", "must be a mapping")
        else:
            _check_str_list(err, f"{path}.exec.command", ex.get("command"), non_empty=True)


# ---- Knative's webhook and the CRD schema ------------------------------------------------------


def _check_webhook(err: _Errors, doc: dict[str, Any]) -> None:
    """The annotation rules of Knative's webhook (`webhook.py`, CONTRACT.md §4.12), with its
    messages; the numeric bounds of the template are checked above with their own wording."""
    for base, e in knative_errors("Service", doc):
        if base.endswith("annotations"):
            keys = e.key.split(", ") if e.key else []
            where = f"{base}[{keys[0]}]" if keys and " " not in keys[0] else base
            err.add(where, e.message + (f" ({e.details})" if e.details else ""))


@lru_cache(maxsize=1)
def _service_schema() -> dict[str, Any] | None:
    directory = default_crd_dir()
    if directory is None:
        return None
    for rt in load_crd_files([directory]):
        if rt.group == "serving.knative.dev" and rt.plural == "services" and rt.version == "v1":
            return rt.schema
    return None


def _check_unknown_fields(err: _Errors, doc: dict[str, Any]) -> None:
    """What the API server refuses under kubectl's default `fieldValidation=Strict`."""
    schema = _service_schema()
    for path in unknown_fields(doc, schema) if schema is not None else ():
        err.add(path, "unknown field (not in the serving.knative.dev/v1 Service schema)")


def _check_traffic(err: _Errors, path: str, traffic: Any, svc: str) -> None:
    if not isinstance(traffic, list) or not traffic:
        err.add(path, "must be a non-empty list")
        return
    total = 0
    tags: set[str] = set()
    for i, t in enumerate(traffic):
        tp = f"{path}[{i}]"
        if not isinstance(t, dict):
            err.add(tp, "must be a mapping")
            continue
        latest = t.get("latestRevision")
        rev = t.get("revisionName")
        if latest is not None and not isinstance(latest, bool):
            err.add(f"{tp}.latestRevision", "must be true or false")
        if latest is True and rev:
            err.add(f"{tp}.revisionName", "must not be set together with latestRevision: true")
        if not latest and not rev:
            err.add(tp, "expected exactly one of revisionName, latestRevision: true")
        if t.get("configurationName"):
            err.add(f"{tp}.configurationName", "must not be set on a Service (it is implied)")
        if rev:
            _check_name(err, f"{tp}.revisionName", rev, _DNS1035, required=True)
        percent = t.get("percent")
        if percent is not None:
            p = _int_field(err, f"{tp}.percent", percent, 0, 100)
            total += p or 0
        tag = t.get("tag")
        if tag is not None:
            if _check_name(err, f"{tp}.tag", tag, _DNS1035, required=True) and tag in tags:
                err.add(f"{tp}.tag", f"{tag!r} is used more than once")
            tags.add(str(tag))
    if total != 100:
        err.add(path, f"traffic targets sum to {total}, want 100")
