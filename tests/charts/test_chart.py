"""charts/sluice, checked offline: helm lint --strict; helm template with the default, HA and minimal CI values,
each render validated by kubernetes-validate --strict (Knative CRD kinds against their CRD schema); the
rendered activator and autoscaler Deployments compared field by field with the stock Knative manifests in
../shared/knative/config; values.schema.json and the template checks rejecting bad values; the roll-back
switch rendering the stock images."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.support import (
    CHART,
    NAMESPACE,
    Obj,
    diff,
    find,
    helm,
    needs_helm,
    needs_validator,
    render,
    stock,
    template_args,
    validate,
)

pytestmark = needs_helm

CI = CHART / "ci"
DEFAULT = CI / "default-values.yaml"
HA = CI / "ha-values.yaml"
MINIMAL = CI / "minimal-values.yaml"
CI_VALUES = {"default": DEFAULT, "ha": HA, "minimal": MINIMAL}

COMPONENTS = ("activator", "autoscaler")
STOCK_DEPLOYMENT_FILES = {"activator": "deployments/activator.yaml", "autoscaler": "deployments/autoscaler.yaml"}

# THE list of intended differences between the rendered Deployments (default values) and the stock ones,
# field path -> why. charts/sluice/README.md ("What the chart changes") documents each path; a test checks
# that it does. Any other difference fails test_default_render_differs_from_stock_only_as_intended.
INTENDED_DIFFERENCES: dict[str, dict[str, str]] = {
    component: {
        f"spec.template.spec.containers[{component}].image": "the Sluice image (or the stock one with useStockImages)",
        "metadata.annotations[helm.sh/resource-policy]": "`keep`: helm uninstall must never delete a stock object",
    }
    for component in COMPONENTS
}

# Fields that differ from stock only when values ask for it (checked on the HA and minimal renders, where
# the default-render differences also apply): path regex -> the value that drives it.
VALUE_DRIVEN = {
    r"spec\.replicas": "highAvailability.replicas, autoscaler.replicas, activator.replicas",
    r"spec\.template\.spec\.containers\[\w+\]\.resources\..*": "<component>.resources",
    r"spec\.template\.spec\.imagePullSecrets": "imagePullSecrets",
    r"(spec\.template\.)?metadata\.labels\[app\.kubernetes\.io/version\]": "knativeVersion",
}

# Stock HPA and PDB of the activator (knative/serving config/core/deployments/activator-hpa.yaml). That file
# is not among the reference copies in ../shared/knative/config (see its README), hence spelled out here.
STOCK_ACTIVATOR_HPA_SPEC: Obj = {
    "minReplicas": 1,
    "maxReplicas": 20,
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "activator"},
    "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 100}}}
    ],
}
STOCK_ACTIVATOR_PDB_SPEC: Obj = {"minAvailable": 1, "selector": {"matchLabels": {"app": "activator"}}}
KNATIVE_LABELS = {"app.kubernetes.io/name": "knative-serving", "app.kubernetes.io/version": "devel"}
QP_RESOURCE_KEYS = {
    f"queue-sidecar-{r}-{k}" for r in ("cpu", "memory", "ephemeral-storage") for k in ("request", "limit")
}


def stock_deployment(component: str) -> Obj:
    return stock(STOCK_DEPLOYMENT_FILES[component], "Deployment", component)


def stock_images() -> dict[str, str]:
    """The image references of the stock manifests (ko:// placeholders in the reference copies)."""
    config_deployment = stock("configmaps/deployment.yaml", "ConfigMap", "config-deployment")
    return {
        "queueProxy": config_deployment["data"]["queue-sidecar-image"],
        **{c: stock_deployment(c)["spec"]["template"]["spec"]["containers"][0]["image"] for c in COMPONENTS},
    }


def image_of(deployment: Obj) -> str:
    image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_lint_strict() -> None:
    for values in CI_VALUES.values():
        result = helm("lint", "--strict", "--namespace", NAMESPACE, CHART, "--values", values)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


@needs_validator
@pytest.mark.parametrize("name", CI_VALUES)
def test_render_is_valid_kubernetes(name: str, tmp_path: Path) -> None:
    objs = render(CI_VALUES[name])
    validate(objs, tmp_path)
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in objs)


@pytest.mark.parametrize("name", CI_VALUES)
def test_render_adds_no_rbac_service_or_account(name: str) -> None:
    # Sluice lives within the stock RBAC (CONTRACT §3.1, §4.1) and the stock Services and ports.
    kinds = {o["kind"] for o in render(CI_VALUES[name])}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount", "Service"}


@pytest.mark.parametrize("component", COMPONENTS)
def test_default_render_differs_from_stock_only_as_intended(component: str) -> None:
    rendered = find(render(DEFAULT), "Deployment", component)
    differences = diff(stock_deployment(component), rendered)
    assert set(differences) == set(INTENDED_DIFFERENCES[component]), differences
    assert image_of(rendered) == f"ghcr.io/knative-sluice/sluice-{component}:0.1.0"


@pytest.mark.parametrize("name", ["ha", "minimal"])
@pytest.mark.parametrize("component", COMPONENTS)
def test_other_renders_differ_from_stock_only_where_values_say(name: str, component: str) -> None:
    rendered = find(render(CI_VALUES[name]), "Deployment", component)
    unexpected = {
        path: change
        for path, change in diff(stock_deployment(component), rendered).items()
        if path not in INTENDED_DIFFERENCES[component] and not any(re.fullmatch(p, path) for p in VALUE_DRIVEN)
    }
    assert not unexpected


def test_intended_differences_are_documented_in_the_chart_readme() -> None:
    readme = (CHART / "README.md").read_text()
    for component, paths in INTENDED_DIFFERENCES.items():
        for path in paths:
            assert f"`{path}`" in readme or f"`{path.replace(component, '<component>')}`" in readme, path


def test_config_deployment_sets_only_owned_keys() -> None:
    stock_cm = stock("configmaps/deployment.yaml", "ConfigMap", "config-deployment")
    for values in CI_VALUES.values():
        cm = find(render(values), "ConfigMap", "config-deployment")
        assert set(cm["data"]) <= {"queue-sidecar-image"} | QP_RESOURCE_KEYS
        assert set(cm["metadata"]["labels"]) == set(stock_cm["metadata"]["labels"])
    default = find(render(DEFAULT), "ConfigMap", "config-deployment")
    assert default["data"] == {"queue-sidecar-image": "ghcr.io/knative-sluice/sluice-queue-proxy:0.1.0"}
    assert default["metadata"]["labels"] == stock_cm["metadata"]["labels"]
    ha = find(render(HA), "ConfigMap", "config-deployment")["data"]
    assert ha["queue-sidecar-cpu-request"] == "100m" and ha["queue-sidecar-memory-limit"] == "256Mi"
    assert "queue-sidecar-ephemeral-storage-limit" not in ha


def test_image_cache_matches_stock_but_for_the_image() -> None:
    rendered = find(render(DEFAULT), "Image", "queue-proxy")
    differences = diff(stock("999-cache.yaml", "Image", "queue-proxy"), rendered)
    assert set(differences) == {"spec.image", "metadata.annotations[helm.sh/resource-policy]"}, differences
    qp = find(render(DEFAULT), "ConfigMap", "config-deployment")["data"]["queue-sidecar-image"]
    assert rendered["spec"]["image"] == qp


def test_activator_hpa_and_pdb_match_stock() -> None:
    objs = render(DEFAULT)
    hpa = find(objs, "HorizontalPodAutoscaler", "activator")
    pdb = find(objs, "PodDisruptionBudget", "activator-pdb")
    assert (hpa["apiVersion"], pdb["apiVersion"]) == ("autoscaling/v2", "policy/v1")
    assert hpa["spec"] == STOCK_ACTIVATOR_HPA_SPEC
    assert pdb["spec"] == STOCK_ACTIVATOR_PDB_SPEC
    for obj in (hpa, pdb):
        assert obj["metadata"]["labels"] == {"app.kubernetes.io/component": "activator", **KNATIVE_LABELS}
    assert "replicas" not in find(objs, "Deployment", "activator")["spec"]  # the HPA owns it, as in stock
    assert not [o for o in objs if o["metadata"]["name"] == "autoscaler-pdb"]


def test_high_availability_values() -> None:
    objs = render(HA)
    assert find(objs, "HorizontalPodAutoscaler", "activator")["spec"]["minReplicas"] == 3  # max(2, HA 3)
    assert find(objs, "HorizontalPodAutoscaler", "activator")["spec"]["maxReplicas"] == 30
    assert find(objs, "PodDisruptionBudget", "activator-pdb")["spec"]["minAvailable"] == "80%"
    assert find(objs, "Deployment", "autoscaler")["spec"]["replicas"] == 3  # max(2, HA 3)
    pdb = find(objs, "PodDisruptionBudget", "autoscaler-pdb")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "autoscaler"}}}
    assert "helm.sh/resource-policy" not in pdb["metadata"].get("annotations", {})  # ours: uninstall removes it
    spec = find(objs, "Deployment", "activator")["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-example-com"}]
    # Digests win over tags; each image has its own.
    assert image_of(find(objs, "Deployment", "autoscaler")) == (
        "registry.example.com/platform/sluice/sluice-autoscaler@sha256:" + "fedcba9876543210" * 4
    )


def test_minimal_values_own_only_the_deployments_and_config_deployment() -> None:
    objs = render(MINIMAL)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == [
        ("ConfigMap", "config-deployment"),
        ("Deployment", "activator"),
        ("Deployment", "autoscaler"),
    ]
    assert "replicas" not in find(objs, "Deployment", "activator")["spec"]  # the stock HPA still owns it
    assert image_of(find(objs, "Deployment", "activator")) == "localhost:5000/sluice-activator:dev"


def test_high_availability_without_hpa_sets_activator_replicas() -> None:
    objs = render(MINIMAL, sets=("highAvailability.replicas=2",))
    assert find(objs, "Deployment", "activator")["spec"]["replicas"] == 2
    objs = render(MINIMAL, sets=("activator.replicas=4", "highAvailability.replicas=2"))
    assert find(objs, "Deployment", "activator")["spec"]["replicas"] == 4


def _write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_rollback_switch_renders_the_stock_images(tmp_path: Path) -> None:
    images = stock_images()
    values = _write_values(tmp_path, {"useStockImages": True, "stockImages": images})
    objs = render(values)
    for component in COMPONENTS:
        rendered = find(objs, "Deployment", component)
        assert image_of(rendered) == images[component]
        # With the stock images the Deployments are the stock ones but for the keep annotation.
        assert set(diff(stock_deployment(component), rendered)) == {"metadata.annotations[helm.sh/resource-policy]"}
    assert find(objs, "ConfigMap", "config-deployment")["data"] == {"queue-sidecar-image": images["queueProxy"]}
    assert find(objs, "Image", "queue-proxy")["spec"]["image"] == images["queueProxy"]


def test_rollback_switch_with_release_digests(tmp_path: Path) -> None:
    images = {
        c: f"gcr.io/knative-releases/knative.dev/serving/cmd/{c.lower()}@sha256:{i}" + "0" * 63
        for i, c in enumerate(("queue", "activator", "autoscaler"))
    }
    values = _write_values(
        tmp_path,
        {"useStockImages": True, "stockImages": {"queueProxy": images["queue"], **{c: images[c] for c in COMPONENTS}}},
    )
    objs = render(values)
    assert [image_of(find(objs, "Deployment", c)) for c in COMPONENTS] == [images["activator"], images["autoscaler"]]
    assert find(objs, "ConfigMap", "config-deployment")["data"]["queue-sidecar-image"] == images["queue"]


def test_one_component_at_a_time(tmp_path: Path) -> None:
    images = stock_images()
    values = _write_values(
        tmp_path,
        {"stockImages": images, "activator": {"useStockImage": True}, "autoscaler": {"useStockImage": True}},
    )
    objs = render(values)
    assert [image_of(find(objs, "Deployment", c)) for c in COMPONENTS] == [images[c] for c in COMPONENTS]
    qp = find(objs, "ConfigMap", "config-deployment")["data"]["queue-sidecar-image"]
    assert qp == "ghcr.io/knative-sluice/sluice-queue-proxy:0.1.0"


# (--set arguments, text the error must contain). Schema errors name the value's path; template checks
# name the value to change.
BAD_VALUES: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown key (typo)": (("activator.replica=2",), "additional properties 'replica' not allowed"),
    "tag with a colon": (("activator.image.tag=bad:tag",), "/activator/image/tag"),
    "short digest": (("queueProxy.image.digest=sha256:abc",), "/queueProxy/image/digest"),
    "registry with scheme": (("image.registry=https://ghcr.io/x",), "/image/registry"),
    "zero replicas": (("autoscaler.replicas=0",), "/autoscaler/replicas"),
    "string replicas": (("highAvailability.replicas=three",), "/highAvailability/replicas"),
    "bad quantity": (("activator.resources.limits.memory=lots",), "/activator/resources/limits/memory"),
    "unknown resource": (("queueProxy.resources.requests.gpu=1",), "additional properties 'gpu' not allowed"),
    "bad PDB": (("activator.pdb.minAvailable=most",), "/activator/pdb/minAvailable"),
    "non-boolean switch": (("useStockImages=yes please",), "/useStockImages"),
    "switch without stock images": (
        ("useStockImages=true", "stockImages.activator=gcr.io/x/activator:v1"),
        "needs stockImages.queueProxy, stockImages.autoscaler",
    ),
    "one component without its stock image": (
        ("queueProxy.useStockImage=true",),
        "<component>.useStockImage=true needs stockImages.queueProxy:",
    ),
    "HPA min above max": (("activator.hpa.minReplicas=30",), "activator.hpa.minReplicas (30) must not exceed"),
    "HA above HPA max": (("highAvailability.replicas=25",), "highAvailability.replicas (25) must not exceed"),
    "replicas with HPA": (("activator.replicas=3",), "the HPA owns the replica count"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_are_rejected_with_a_clear_message(case: str) -> None:
    sets, message = BAD_VALUES[case]
    result = helm(*template_args(sets=sets))
    assert result.returncode != 0, f"{case}: accepted"
    assert message in result.stderr, result.stderr


def test_wrong_namespace_is_rejected() -> None:
    result = helm(*template_args(namespace="default"))
    assert result.returncode != 0
    assert "install into the Knative Serving namespace: helm ... --namespace knative-serving" in result.stderr


def test_grafana_dashboard_configmap_on_request() -> None:
    assert not [o for o in render() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "sluice-grafana-dashboard"]
    objs = render(sets=("grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"))
    cm = find(objs, "ConfigMap", "sluice-grafana-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "sluice-data-plane.json").read_text())
    assert json.loads(cm["data"]["sluice-data-plane.json"]) == shipped
