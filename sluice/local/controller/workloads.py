"""The Deployment → Pods part of Kubernetes (deployment + replicaset controllers + scheduler).

Pods are created straight from the Deployment's template (no ReplicaSet objects: nothing in the
data plane reads them), already bound to the one node, and owned by the Deployment so garbage
collection removes them with it. Scale-down deletes gracefully, preferring pods that are not
ready, then the newest (the replicaset controller's order); the kubelet then drains them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from typing import Any

from ..kube import ALL, KubeError
from .caches import Caches
from .names import NODE_NAME, controlled_by, meta, owner_ref
from .network import pod_is_ready
from .writer import Writer

__all__ = ["WorkloadReconciler"]

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.String alphabet


def _suffix(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def make_pod(dep: dict[str, Any]) -> dict[str, Any]:
    m = meta(dep)
    template = (dep.get("spec") or {}).get("template") or {}
    h = template_hash(template)
    labels = dict(meta(template).get("labels") or {}) | {"pod-template-hash": h}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["nodeName"] = NODE_NAME
    spec.setdefault("restartPolicy", "Always")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{m['name']}-{h}-{_suffix(5)}",
            "namespace": m.get("namespace", "default"),
            "labels": labels,
            "annotations": dict(meta(template).get("annotations") or {}),
            "ownerReferences": [owner_ref(dep, "apps/v1", "Deployment")],
        },
        "spec": spec,
    }


def _deletion_order(pod: dict[str, Any]) -> tuple[int, int, str]:
    phase = (pod.get("status") or {}).get("phase", "Pending")
    # Not-ready and pending first, then the newest (reverse creation time).
    created = meta(pod).get("creationTimestamp", "")
    newest_first = "".join(chr(255 - ord(ch)) for ch in created)
    return (1 if pod_is_ready(pod) else 0, 1 if phase == "Running" else 0, newest_first)


class WorkloadReconciler:
    def __init__(self, caches: Caches, writer: Writer) -> None:
        self.c = caches
        self.w = writer

    async def reconcile(self) -> None:
        for dep in self.c.deployments.items():
            if not meta(dep).get("deletionTimestamp"):
                await self._deployment(dep)

    async def _deployment(self, dep: dict[str, Any]) -> None:
        m = meta(dep)
        ns = m.get("namespace", "default")
        spec = dep.get("spec") or {}
        replicas = spec.get("replicas")
        want = 1 if replicas is None else int(replicas)
        pods = [p for p in self.c.in_namespace(self.c.pods, ns) if controlled_by(p, dep)]
        live = [p for p in pods if not meta(p).get("deletionTimestamp")]
        for _ in range(want - len(live)):
            pod = make_pod(dep)
            try:
                created = await self.w.kube.create(ALL.PODS, ns, pod)
            except KubeError:
                break
            self.w.writes += 1
            self.c.pods.objects[(ns, meta(created)["name"])] = created
            live.append(created)
        if len(live) > want:
            for pod in sorted(live, key=_deletion_order)[: len(live) - want]:
                name = meta(pod)["name"]
                self.w.writes += 1
                await self.w.kube.delete(ALL.PODS, ns, name)
                live.remove(pod)
        ready = sum(1 for p in live if pod_is_ready(p))
        status = {
            "observedGeneration": m.get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, len(live) - ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if ready >= want else "False",
                    "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
                },
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
        await self.w.status(ALL.DEPLOYMENTS, self.c.deployments, dep, status)
