"""Manifest validation: field paths and reasons, before anything starts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sluice.local.manifest import ManifestError, load_manifests, validate_service

ROOT = Path(__file__).resolve().parents[2]

GOOD: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "hello"},
    "spec": {
        "template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/window": "6s"}},
            "spec": {"containers": [{"image": "x", "command": ["python", "app.py"]}]},
        }
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def test_good_manifest_and_examples_are_valid() -> None:
    assert validate_service(GOOD) == []
    assert [m.name for m in load_manifests([ROOT / "examples/autoscale.yaml"])] == ["autoscale"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("apiVersion", "v1", "apiVersion: must be 'serving.knative.dev/v1'"),
        ("metadata.name", "Hello_World", "metadata.name: 'Hello_World' must be a lowercase"),
        (
            "spec.template.spec.containerConcurrency",
            5000,
            "spec.template.spec.containerConcurrency: must be in [0, 1000]",
        ),
        ("spec.template.spec.timeoutSeconds", "30", "spec.template.spec.timeoutSeconds: must be an integer"),
        ("spec.template.spec.containers.0.command", None, "spec.template.spec.containers[0].command: required"),
        ("spec.template.spec.containers.0.ports", [{"containerPort": 8012}], "8012 is reserved for the queue-proxy"),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/window": "2s"},
            "spec.template.metadata.annotations[autoscaling.knative.dev/window]: 2s must be between 6s and 3600s",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"},
            "min-scale=3 must be less than or equal to max-scale=2",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/target-burst-capacity": "-2"},
            "target-burst-capacity]: -2 must be in >= 0",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
            "needs a Kubernetes cluster",
        ),
        ("spec.traffic", [{"latestRevision": True, "percent": 60}], "spec.traffic: traffic targets sum to 60"),
        ("spec.traffic", [{"percent": 100}], "spec.traffic[0]: expected exactly one of revisionName"),
        ("spec.template.spec.containers.0.env", [{"name": "A", "value": 1}], "env[0].value: must be a string"),
        (
            "spec.template.spec.containers.0.readinessProbe",
            {"httpGet": {}, "tcpSocket": {}},
            "expected exactly one of httpGet, tcpSocket, exec, grpc",
        ),
    ],
)
def test_problems_name_the_field(path: str, value: Any, expected: str) -> None:
    problems = validate_service(with_(path, value))
    assert any(expected in p for p in problems), problems


def test_revision_name_needs_the_service_prefix() -> None:
    doc = with_("spec.template.metadata", {"name": "other-v1"})
    assert "spec.template.metadata.name: 'other-v1' must have prefix 'hello-'" in validate_service(doc)


def test_load_collects_every_problem_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: a}\n")
    (tmp_path / "b.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "missing.yaml"])
    text = str(info.value)
    assert "a.yaml: spec: required" in text
    assert "b.yaml: not valid YAML" in text
    assert "missing.yaml: cannot read" in text
