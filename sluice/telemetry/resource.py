"""Resource attributes of each component's telemetry (CONTRACT.md §2.10, §3.10, §4.7)."""

from __future__ import annotations

from collections.abc import Mapping

import sluice

__all__ = ["component_resource", "revision_attributes"]


def revision_attributes(namespace: str, service: str, configuration: str, revision: str) -> dict[str, str]:
    """The per-revision attributes Knative puts on its metrics and spans."""
    return {
        "k8s.namespace.name": namespace,
        "kn.service.name": service,
        "kn.configuration.name": configuration,
        "kn.revision.name": revision,
    }


def component_resource(
    container: str,
    namespace: str,
    pod: str,
    environ: Mapping[str, str],
    revision: Mapping[str, str] | None = None,
    default_service_name: str = "",
) -> dict[str, str]:
    """`service.name` is the first non-empty of OTEL_SERVICE_NAME, the revision's service,
    configuration and revision names, `default_service_name` and the pod name (§2.10)."""
    rev = dict(revision or {})
    candidates = (
        environ.get("OTEL_SERVICE_NAME", ""),
        rev.get("kn.service.name", ""),
        rev.get("kn.configuration.name", ""),
        rev.get("kn.revision.name", ""),
        default_service_name,
        pod,
    )
    attributes = {
        "service.name": next((c for c in candidates if c), container),
        "service.version": sluice.__version__,
        "service.instance.id": pod or _random_id(),
        "k8s.container.name": container,
        "k8s.namespace.name": namespace,
        "k8s.pod.name": pod,
    }
    for key in ("kn.service.name", "kn.configuration.name", "kn.revision.name"):
        if key in rev:
            attributes[key] = rev[key]
    return attributes


def _random_id() -> str:
    import uuid  # only without a pod name (tests, `sluice local`)

    return str(uuid.uuid4())
