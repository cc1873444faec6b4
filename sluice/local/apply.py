"""Creating or replacing Knative Services in the (embedded) API, as `kubectl apply` would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .kube import ALL, Kube
from .kubelet import WORKING_DIR_ANNOTATION
from .manifest import Manifest

__all__ = ["apply_manifests", "localize"]


def localize(manifest: Manifest) -> dict[str, Any]:
    """The body to submit: the namespace defaulted and, when the container sets no workingDir,
    the manifest's directory recorded on the template so relative commands resolve from there."""
    body = copy.deepcopy(manifest.body)
    body["metadata"].setdefault("namespace", "default")
    template = body["spec"]["template"]
    containers = (template.get("spec") or {}).get("containers") or [{}]
    source = Path(manifest.source.split("[", 1)[0])
    if not containers[0].get("workingDir") and source.exists():
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        annotations.setdefault(WORKING_DIR_ANNOTATION, str(source.resolve().parent))
    return body


async def apply_manifests(kube: Kube, manifests: list[Manifest]) -> list[str]:
    """Returns one line per Service: created / configured / unchanged."""
    out = []
    for m in manifests:
        body = localize(m)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        existing = await kube.get(ALL.SERVICES, ns, name)
        if existing is None:
            await kube.create(ALL.SERVICES, ns, body)
            out.append(f"service.serving.knative.dev/{name} created")
            continue
        if existing.get("spec") == body["spec"] and (existing["metadata"].get("annotations") or {}) == (
            body["metadata"].get("annotations") or {}
        ):
            out.append(f"service.serving.knative.dev/{name} unchanged")
            continue
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await kube.replace(ALL.SERVICES, ns, name, body)
        out.append(f"service.serving.knative.dev/{name} configured")
    return out
