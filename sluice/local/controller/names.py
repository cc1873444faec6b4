"""Knative's label, annotation and port names (CONTRACT.md §0), and small object helpers."""

from __future__ import annotations

import datetime
from typing import Any

SERVING = "serving.knative.dev/"
L_SERVICE = SERVING + "service"
L_SERVICE_UID = SERVING + "serviceUID"
L_CONFIGURATION = SERVING + "configuration"
L_CONFIGURATION_UID = SERVING + "configurationUID"
L_CONFIGURATION_GENERATION = SERVING + "configurationGeneration"
L_REVISION = SERVING + "revision"
L_REVISION_UID = SERVING + "revisionUID"
L_ROUTE = SERVING + "route"
L_SKS = "networking.internal.knative.dev/serverlessservice"
L_SERVICE_TYPE = "networking.internal.knative.dev/serviceType"
A_CLASS = "autoscaling.knative.dev/class"
A_METRIC = "autoscaling.knative.dev/metric"
A_INITIAL_SCALE = "autoscaling.knative.dev/initial-scale"
A_MIN_SCALE = "autoscaling.knative.dev/min-scale"
KPA_CLASS = "kpa.autoscaling.knative.dev"

SYSTEM_NAMESPACE = "knative-serving"
NODE_NAME = "sluice-local"
USER_CONTAINER = "user-container"
QUEUE_CONTAINER = "queue-proxy"
DEFAULT_USER_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 300  # config-defaults revision-timeout-seconds

QUEUE_HTTP_PORT = 8012
QUEUE_H2C_PORT = 8013
QUEUE_TLS_PORT = 8112
QUEUE_ADMIN_PORT = 8022
QUEUE_METRICS_PORT = 9090
QUEUE_USER_METRICS_PORT = 9091


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch; 0 for an empty or unparsable value."""
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = obj.get("metadata") or {}
    return out


def owner_ref(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    m = meta(obj)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = meta(owner).get("uid")
    return any(r.get("uid") == uid and r.get("controller") for r in meta(obj).get("ownerReferences") or ())


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def is_true(obj: dict[str, Any] | None, ctype: str) -> bool:
    if obj is None:
        return False
    c = condition(obj, ctype)
    return c is not None and c.get("status") == "True"


def conditions(old: dict[str, Any] | None, new: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Conditions (type, status, reason, message), keeping `lastTransitionTime` of unchanged ones
    (Knative's condition manager does the same; the autoscaler reads some of those times)."""
    out = []
    stamp = now_rfc3339()
    for ctype, status, reason, message in new:
        prev = condition(old, ctype) if old is not None else None
        same = prev is not None and (prev.get("status"), prev.get("reason", ""), prev.get("message", "")) == (
            status,
            reason,
            message,
        )
        c: dict[str, Any] = {"type": ctype, "status": status, "lastTransitionTime": stamp}
        if same and prev is not None:
            c["lastTransitionTime"] = prev.get("lastTransitionTime", stamp)
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        out.append(c)
    return out


def status_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Compares statuses ignoring lastTransitionTime stamps."""

    def strip(s: Any) -> Any:
        if isinstance(s, dict):
            return {k: strip(v) for k, v in s.items() if k != "lastTransitionTime"}
        if isinstance(s, list):
            return [strip(v) for v in s]
        return s

    return bool(strip(old) != strip(new))
