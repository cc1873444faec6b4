"""Plain manifests (deploy/) and the tool installer: deploy/base/sluice.yaml is exactly a fresh render of
the chart, the example kustomize overlay rewrites all three images and stays valid, and
scripts/install-tools pins a kubernetes-validate that has the schemas of KUBE_VERSION."""

from __future__ import annotations

import re
from pathlib import Path

from tests.charts.support import (
    KUBE_VERSION,
    KUBECTL,
    ROOT,
    docs,
    find,
    needs_helm,
    needs_kubectl,
    needs_validator,
    run,
    validate,
)

DEPLOY = ROOT / "deploy"
INSTALL_TOOLS = ROOT / "scripts" / "install-tools"


@needs_helm
def test_rendered_manifest_is_a_fresh_render() -> None:
    result = run(["bash", DEPLOY / "render", "--stdout"])
    assert result.returncode == 0, result.stderr
    assert (DEPLOY / "base" / "sluice.yaml").read_text() == result.stdout, "stale: run deploy/render"


@needs_kubectl
@needs_validator
def test_example_overlay_rewrites_every_image(tmp_path: Path) -> None:
    result = run([KUBECTL, "kustomize", DEPLOY / "overlay-example"])
    assert result.returncode == 0, result.stderr
    objs = docs(result.stdout)
    validate(objs, tmp_path)
    images = [
        find(objs, "ConfigMap", "config-deployment")["data"]["queue-sidecar-image"],
        find(objs, "Image", "queue-proxy")["spec"]["image"],
        *(
            find(objs, "Deployment", c)["spec"]["template"]["spec"]["containers"][0]["image"]
            for c in ("activator", "autoscaler")
        ),
    ]
    assert all(i.startswith("registry.example.com/platform/sluice-") for i in images), images
    assert images[0] == images[1]


@needs_kubectl
def test_base_kustomization_is_the_rendered_manifest() -> None:
    result = run([KUBECTL, "kustomize", DEPLOY / "base"])
    assert result.returncode == 0, result.stderr
    as_objects = sorted(docs(result.stdout), key=lambda o: (o["kind"], o["metadata"]["name"]))
    rendered = docs((DEPLOY / "base" / "sluice.yaml").read_text())
    assert as_objects == sorted(rendered, key=lambda o: (o["kind"], o["metadata"]["name"]))


def test_install_tools_is_valid_bash_and_pins_a_validator_for_our_kube_version() -> None:
    assert run(["bash", "-n", INSTALL_TOOLS]).returncode == 0
    text = INSTALL_TOOLS.read_text()
    m = re.search(r'^kv_version="(\d+)\.(\d+)\.\d+"$', text, re.MULTILINE)
    assert m, "kubernetes-validate is pinned"
    # kubernetes-validate X.Y ships schemas for the versions up to X.Y, from 1.25 on.
    want = tuple(int(p) for p in KUBE_VERSION.split(".")[:2])
    assert (1, 25) <= want <= (int(m.group(1)), int(m.group(2)))
    assert re.search(r'^layer_sha256="[0-9a-f]{64}"$', text, re.MULTILINE), "the helm wheel is pinned by hash"
