"""What Knative's SKS reconciler and Kubernetes' endpoints controller do (CONTRACT.md §0, §3.4).

- Endpoints of every Service with a selector (the `<rev>-private` services): ready pods in
  `addresses`, running-but-unready ones in `notReadyAddresses`, terminating pods nowhere; ports by
  the service's target ports; the Service's labels copied (the activator selects on them, §3.4).
- For each ServerlessService (created by the autoscaler): the private and public Services, the
  public Endpoints — the ready activators (the `activator-service` Endpoints, which the supervisor
  keeps) in `Proxy` mode, the ready pods in `Serve` mode (falling back to the activators while no
  pod is ready, as Knative does) — and the SKS status the autoscaler reads
  (`serviceName`, `privateServiceName`, `ActivatorEndpointsPopulated` with its transition time).
"""

from __future__ import annotations

from typing import Any

from ..kube import ALL
from .caches import Caches
from .names import (
    L_SERVICE_TYPE,
    QUEUE_H2C_PORT,
    QUEUE_HTTP_PORT,
    QUEUE_TLS_PORT,
    SYSTEM_NAMESPACE,
    conditions,
    meta,
)
from .resources import make_private_service, make_public_service
from .writer import Writer

__all__ = ["NetworkReconciler", "pod_is_ready"]


def pod_is_ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def _address(pod: dict[str, Any]) -> dict[str, Any]:
    m = meta(pod)
    return {
        "ip": (pod.get("status") or {}).get("podIP", ""),
        "nodeName": (pod.get("spec") or {}).get("nodeName", ""),
        "targetRef": {"kind": "Pod", "name": m["name"], "namespace": m.get("namespace", ""), "uid": m.get("uid", "")},
    }


class NetworkReconciler:
    def __init__(self, caches: Caches, writer: Writer, activator_ip: str) -> None:
        self.c = caches
        self.w = writer
        self.activator_ip = activator_ip

    def _activator_addresses(self) -> list[dict[str, str]]:
        """The ready activators, as Knative's SKS reconciler reads them from the activator
        Service's Endpoints; the configured address while those do not exist."""
        eps = self.c.endpoints.get(SYSTEM_NAMESPACE, "activator-service")
        if eps is None:
            return [{"ip": self.activator_ip}]
        ips = {str(a["ip"]) for sub in eps.get("subsets") or () for a in sub.get("addresses") or () if a.get("ip")}
        return [{"ip": ip} for ip in sorted(ips)]

    async def reconcile(self) -> None:
        for svc in self.c.services.items():
            if (svc.get("spec") or {}).get("selector"):
                await self._endpoints_for(svc)
        for sks in self.c.sks.items():
            await self._sks(sks)
        await self._orphan_endpoints()

    async def _ensure_endpoints(
        self, ns: str, name: str, labels: dict[str, str], subsets: list[dict[str, Any]]
    ) -> None:
        desired = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "subsets": subsets,
        }
        await self.w.ensure(ALL.ENDPOINTS, self.c.endpoints, desired, spec_keys=("subsets",))

    async def _endpoints_for(self, svc: dict[str, Any]) -> None:
        m = meta(svc)
        ns = m.get("namespace", "default")
        selector: dict[str, str] = (svc.get("spec") or {}).get("selector") or {}
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        for pod in self.c.in_namespace(self.c.pods, ns):
            pm = meta(pod)
            labels = pm.get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            if pm.get("deletionTimestamp") or not (pod.get("status") or {}).get("podIP"):
                continue  # terminating pods leave the endpoints at once (endpoints controller)
            (ready if pod_is_ready(pod) else not_ready).append(_address(pod))
        ports = [
            {"name": p.get("name", ""), "port": int(p.get("targetPort") or p.get("port")), "protocol": "TCP"}
            for p in (svc.get("spec") or {}).get("ports") or ()
        ]
        subsets: list[dict[str, Any]] = []
        if ready or not_ready:
            subset: dict[str, Any] = {"ports": ports}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: str(a["ip"]))
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: str(a["ip"]))
            subsets.append(subset)
        await self._ensure_endpoints(ns, m["name"], dict(m.get("labels") or {}), subsets)

    async def _sks(self, sks: dict[str, Any]) -> None:
        m = meta(sks)
        if m.get("deletionTimestamp"):
            return
        ns, name = m.get("namespace", "default"), m["name"]
        spec = sks.get("spec") or {}
        target = self.c.deployments.get(ns, (spec.get("objectRef") or {}).get("name", ""))
        if target is None:
            return
        selector = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        await self.w.ensure(ALL.K8S_SERVICES, self.c.services, make_private_service(sks, selector))
        public = make_public_service(sks)
        await self.w.ensure(ALL.K8S_SERVICES, self.c.services, public)
        private_eps = self.c.endpoints.get(ns, f"{name}-private")
        ready: list[dict[str, Any]] = []
        for subset in (private_eps or {}).get("subsets") or ():
            ready += subset.get("addresses") or []
        h2c = spec.get("protocolType") == "h2c"
        serve = spec.get("mode") == "Serve" and bool(ready)
        if serve:
            port_name, port = ("http2", QUEUE_H2C_PORT) if h2c else ("http", QUEUE_HTTP_PORT)
            subsets = [
                {
                    "addresses": ready,
                    "ports": [
                        {"name": port_name, "port": port, "protocol": "TCP"},
                        {"name": "https", "port": QUEUE_TLS_PORT, "protocol": "TCP"},
                    ],
                }
            ]
        else:
            subsets = [
                {
                    "addresses": self._activator_addresses(),
                    "ports": [
                        {"name": "http", "port": QUEUE_HTTP_PORT, "protocol": "TCP"},
                        {"name": "http2", "port": QUEUE_H2C_PORT, "protocol": "TCP"},
                        {"name": "https", "port": QUEUE_TLS_PORT, "protocol": "TCP"},
                    ],
                }
            ]
        await self._ensure_endpoints(ns, name, meta(public)["labels"], subsets)
        populated = (
            ("EndpointsPopulated", "True", "", "")
            if ready
            else ("EndpointsPopulated", "Unknown", "NoHealthyBackends", "")
        )
        activator = (
            ("ActivatorEndpointsPopulated", "False", "ActivatorEndpointsRemoved", "")
            if serve
            else ("ActivatorEndpointsPopulated", "True", "ActivatorEndpointsPopulated", "")
        )
        status = {
            "observedGeneration": m.get("generation", 1),
            "serviceName": name,
            "privateServiceName": f"{name}-private",
            "conditions": conditions(sks, [activator, populated, ("Ready", *populated[1:])]),
        }
        await self.w.status(ALL.SKS, self.c.sks, sks, status)

    async def _orphan_endpoints(self) -> None:
        """Endpoints of Knative services whose Service is gone (Kubernetes deletes them too)."""
        for ep in self.c.endpoints.items():
            m = meta(ep)
            if L_SERVICE_TYPE not in (m.get("labels") or {}):
                continue
            if self.c.services.get(m.get("namespace", ""), m["name"]) is None:
                await self.w.kube.delete(ALL.ENDPOINTS, m.get("namespace", ""), m["name"])
                self.c.endpoints.objects.pop((m.get("namespace", ""), m["name"]), None)
