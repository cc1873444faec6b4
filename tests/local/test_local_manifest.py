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
            "spec.template.metadata.annotations[autoscaling.knative.dev/window]: expected 6s <= 2s <= 1h0m0s",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"},
            "max-scale=2 is less than min-scale=3",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/target-burst-capacity": "-2"},
            "target-burst-capacity]: invalid value: -2",
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


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # Fields the CRD schema does not know: what kubectl's fieldValidation=Strict refuses.
        ("spec.template.spec.containerConcurency", 5, "spec.template.spec.containerConcurency: unknown field"),
        ("spec.template.spec.containers.0.valeu", "x", "spec.template.spec.containers[0].valeu: unknown field"),
        ("spec.template.spec.contianers", [], "spec.template.spec.contianers: unknown field"),
        # Knative's webhook, with its messages.
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/targt": "10"},
            'invalid key name "autoscaling.knative.dev/targt" (unknown autoscaling annotation; '
            'did you mean "autoscaling.knative.dev/target"?)',
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/target": "0"},
            "[autoscaling.knative.dev/target]: target 0 should be at least 0.01",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/window": "2h"},
            "expected 6s <= 2h <= 1h0m0s",
        ),
        (
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/metric": "cpu"},
            "[autoscaling.knative.dev/metric]: invalid value: cpu",
        ),
        (
            "metadata.annotations",
            {"autoscaling.knative.dev/min-scale": "1"},
            'autoscaling annotations must be put under "spec.template.metadata.annotations" to work',
        ),
    ],
)
def test_strict_fields_and_webhook_messages(path: str, value: Any, expected: str) -> None:
    problems = validate_service(with_(path, value))
    assert any(expected in p for p in problems), problems
