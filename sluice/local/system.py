"""The system side of `sluice local`: the `knative-serving` namespace and its ConfigMaps, and the
activator and autoscaler processes with the environment that points them at the embedded API
(CONTRACT.md §3.1, §4.1).

Address plan on loopback: the activators are `<net>.0.2`, `<net>.0.4`, … (ports 8012/8013 as in a
cluster), the autoscaler `<net>.0.3` (stat server :8080), pods `<net>.1.1` upward.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .controller.names import SYSTEM_NAMESPACE
from .data import knative_configmaps
from .kube import ALL, Kube, KubeError

__all__ = [
    "ACTIVATOR_SERVICE",
    "activator_env",
    "activator_subsets",
    "autoscaler_env",
    "create_system_objects",
    "shipped_configmaps",
]

# Knative's shipped ConfigMaps hold only `_example`; these keys change behaviour in `sluice local`.
LOCAL_OVERRIDES: dict[str, dict[str, str]] = {
    # No service mesh on one machine, and no ClusterIP routing: pods are reached directly.
    "config-network": {"mesh-compatibility-mode": "disabled"},
}


def config_initial_scale(autoscaler_config: Mapping[str, str]) -> int:
    """config-autoscaler `initial-scale` as `sluice local` sets it (Knative's default 1)."""
    try:
        return int(autoscaler_config.get("initial-scale", "1"))
    except ValueError:
        return 1


def shipped_configmaps() -> dict[str, dict[str, str]]:
    """`data` of Knative's ConfigMaps as shipped in the package (sluice/local/data; their
    `_example` keys only document defaults). A missing or corrupt file raises PackageDataError."""
    return {name: dict(values) for name, values in knative_configmaps().items()}


ACTIVATOR_SERVICE = "activator-service"
ACTIVATOR_PORTS = [("http", 80, 8012), ("http2", 81, 8013), ("https", 443, 8112)]
_HTTP_8080 = {"name": "http", "port": 8080}


def activator_subsets(ready: Sequence[str], not_ready: Sequence[str]) -> list[dict[str, Any]]:
    """The `activator-service` Endpoints subsets: ready activators serve, the others wait."""
    subset: dict[str, Any] = {"ports": [{"name": n, "port": t} for n, _, t in ACTIVATOR_PORTS]}
    if ready:
        subset["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return [subset]


async def create_system_objects(
    kube: Kube, autoscaler_overrides: Mapping[str, str], activator_ips: Sequence[str], autoscaler_ip: str
) -> None:
    try:
        await kube.create(ALL.NAMESPACES, "", {"metadata": {"name": SYSTEM_NAMESPACE}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    data = shipped_configmaps()
    for name, values in LOCAL_OVERRIDES.items():
        data[name] = data[name] | values
    data["config-autoscaler"] = data["config-autoscaler"] | dict(autoscaler_overrides)
    for name, values in data.items():
        body = {"metadata": {"name": name, "namespace": SYSTEM_NAMESPACE}, "data": values}
        try:
            await kube.create(ALL.CONFIGMAPS, SYSTEM_NAMESPACE, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            await kube.merge_patch(ALL.CONFIGMAPS, SYSTEM_NAMESPACE, name, {"data": values})
    # The Services a cluster has for the two components (activator-service is what Knative's SKS
    # reconciler reads the activator endpoints from).
    # The activators start not ready; the supervisor moves each to `addresses` once it serves.
    for svc, ports, subsets in (
        (ACTIVATOR_SERVICE, ACTIVATOR_PORTS, activator_subsets([], activator_ips)),
        ("autoscaler", [("http", 8080, 8080)], [{"addresses": [{"ip": autoscaler_ip}], "ports": [_HTTP_8080]}]),
    ):
        labels = {"app": svc.split("-")[0]}
        service: dict[str, Any] = {
            "metadata": {"name": svc, "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports]},
        }
        endpoints: dict[str, Any] = {
            "metadata": {"name": svc, "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "subsets": subsets,
        }
        for gvr, obj in ((ALL.K8S_SERVICES, service), (ALL.ENDPOINTS, endpoints)):
            try:
                await kube.create(gvr, SYSTEM_NAMESPACE, obj)
            except KubeError as exc:
                if exc.status != 409:
                    raise


def _common(kubeconfig: Path, pod: str, ip: str) -> dict[str, str]:
    return {
        "POD_NAME": pod,
        "POD_IP": ip,
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
        "CLUSTER_DOMAIN": "cluster.local",
        "KUBECONFIG": str(kubeconfig),
        "SLUICE_KUBECONFIG": str(kubeconfig),
    }


def autoscaler_env(kubeconfig: Path, ip: str) -> dict[str, str]:
    return _common(kubeconfig, "autoscaler-local", ip) | {
        "SLUICE_STAT_SERVER_HOST": ip,
        "SLUICE_STAT_SERVER_PORT": "8080",
        # The activator probe before scale-to-zero (§4.4) goes where the public Service would
        # send it: the first address of its Endpoints, which the SKS reconciler writes.
        "SLUICE_ACTIVATOR_PROBE_ENDPOINTS": "true",
        # One replica: no leases, no stat forwarding between replicas.
        "SLUICE_LEADER_ELECTION": "false",
        # Its own address, as every component here has one (127.0.0.1:8099 would clash between instances).
        "SLUICE_DEBUG_ADDRESS": f"{ip}:8099",
    }


def activator_env(kubeconfig: Path, ip: str, autoscaler_ip: str, pod: str = "activator-local") -> dict[str, str]:
    return _common(kubeconfig, pod, ip) | {
        "SLUICE_BIND_HOST": ip,
        "SLUICE_AUTOSCALER_URL": f"ws://{autoscaler_ip}:8080/",
        # Stopped only with all of `sluice local`: no 45 s drain on stop.
        "SLUICE_DRAIN_SLEEP": "0",
        # Its own address: two replicas (and other instances) would clash on 127.0.0.1:8098.
        "SLUICE_DEBUG_ADDRESS": f"{ip}:8098",
    }


def component_argv(module: str) -> list[str]:
    return [sys.executable, "-m", module]
