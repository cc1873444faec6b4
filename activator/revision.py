"""What the activator needs to know about a Revision, and how a request names one.

`identify` is Knative's context handler (CONTRACT.md §3.3); `RevisionInfo.from_object`
extracts the spec fields the throttler, timeout handler and prober use (§3.4–§3.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "RevKey", "RevisionInfo", "identify", "not_found_message"]

RevKey = tuple[str, str]  # (namespace, name)

# config-defaults `revision-timeout-seconds`: the webhook writes it into every Revision,
# so a missing value only happens with objects created around the webhook (tests, local).
DEFAULT_TIMEOUT_SECONDS = 300


def identify(revision: bytes | None, namespace: bytes | None, host: bytes | None, domain: bytes) -> RevKey | None:
    """The revision a request is for (§3.3): the ingress's headers, else a Host of the
    form `<rev>.<ns>.svc.<cluster-domain>[:port]`; None when neither names one."""
    if revision and namespace:
        return (namespace.decode("latin-1"), revision.decode("latin-1"))
    if not host:
        return None
    # Go: strings.SplitN(host, ".", 4) must yield exactly 4 parts.
    parts = host.split(b".", 3)
    if len(parts) != 4 or parts[2] != b"svc":
        return None
    tail = parts[3]
    colon = tail.rfind(b":")
    if colon >= 0 and b"]" not in tail[colon:]:
        tail = tail[:colon]
    if tail != domain:
        return None
    return (parts[1].decode("latin-1"), parts[0].decode("latin-1"))


def not_found_message(name: str) -> str:
    """§3.3: the lister's NotFound error text behind Go's prefix."""
    return f'Error getting active endpoint: revision.serving.knative.dev "{name}" not found'


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _serving_container(containers: list[Any]) -> dict[str, Any] | None:
    """The container that receives traffic: the one declaring ports, else the only one."""
    dicts = [c for c in containers if isinstance(c, dict)]
    for c in dicts:
        if c.get("ports"):
            return c
    return dicts[0] if len(dicts) == 1 else None


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    namespace: str
    name: str
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    h2c: bool = False
    # §3.4: off when the serving container has an exec readiness probe, or any
    # container has a startup probe — then only Kubernetes readiness counts.
    probe_optimisation: bool = True
    service: str = ""
    configuration: str = ""

    @property
    def key(self) -> RevKey:
        return (self.namespace, self.name)

    @property
    def port_name(self) -> str:
        """The Endpoints/Service port the activator uses (§3.4): `http2` for h2c revisions."""
        return "http2" if self.h2c else "http"

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RevisionInfo:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        labels = meta.get("labels") or {}
        containers = spec.get("containers") or []
        serving = _serving_container(containers)
        h2c = False
        optimise = True
        if serving is not None:
            ports = serving.get("ports") or []
            if ports and isinstance(ports[0], dict):
                h2c = ports[0].get("name") == "h2c"
            readiness = serving.get("readinessProbe") or {}
            if isinstance(readiness, dict) and readiness.get("exec") is not None:
                optimise = False
        for c in containers:
            if isinstance(c, dict) and c.get("startupProbe") is not None:
                optimise = False
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            container_concurrency=max(0, _int(spec.get("containerConcurrency"), 0)),
            timeout_seconds=max(0, _int(spec.get("timeoutSeconds"), DEFAULT_TIMEOUT_SECONDS)),
            response_start_timeout_seconds=max(0, _int(spec.get("responseStartTimeoutSeconds"), 0)),
            idle_timeout_seconds=max(0, _int(spec.get("idleTimeoutSeconds"), 0)),
            h2c=h2c,
            probe_optimisation=optimise,
            service=str(labels.get("serving.knative.dev/service", "")),
            configuration=str(labels.get("serving.knative.dev/configuration", "")),
        )
