"""Builders of the objects Knative's controller derives from a Service (CONTRACT.md §0, §2.1, §2.2).

Pure functions from input objects to desired objects, so they are unit-tested without an API.
Names, labels and annotations follow Knative's (`pkg/reconciler/{service,configuration,
revision,serverlessservice}/resources`), so the autoscaler and the activator cannot tell
`sluice local` from a cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .names import (
    A_CLASS,
    A_INITIAL_SCALE,
    A_METRIC,
    A_MIN_SCALE,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_USER_PORT,
    KPA_CLASS,
    L_CONFIGURATION,
    L_CONFIGURATION_GENERATION,
    L_CONFIGURATION_UID,
    L_REVISION,
    L_REVISION_UID,
    L_ROUTE,
    L_SERVICE,
    L_SERVICE_TYPE,
    L_SERVICE_UID,
    L_SKS,
    QUEUE_ADMIN_PORT,
    QUEUE_CONTAINER,
    QUEUE_H2C_PORT,
    QUEUE_HTTP_PORT,
    QUEUE_METRICS_PORT,
    QUEUE_TLS_PORT,
    QUEUE_USER_METRICS_PORT,
    SYSTEM_NAMESPACE,
    USER_CONTAINER,
    meta,
    owner_ref,
)

SERVING_V1 = "serving.knative.dev/v1"

# ---- Service -> Configuration, Route -------------------------------------------------------


def make_configuration(ksvc: dict[str, Any]) -> dict[str, Any]:
    m = meta(ksvc)
    labels = dict(m.get("labels") or {}) | {L_SERVICE: m["name"], L_SERVICE_UID: m.get("uid", "")}
    return {
        "apiVersion": SERVING_V1,
        "kind": "Configuration",
        "metadata": {
            "name": m["name"],
            "namespace": m.get("namespace", "default"),
            "labels": labels,
            "annotations": dict(m.get("annotations") or {}),
            "ownerReferences": [owner_ref(ksvc, SERVING_V1, "Service")],
        },
        "spec": {"template": copy.deepcopy((ksvc.get("spec") or {}).get("template") or {})},
    }


def make_route(ksvc: dict[str, Any]) -> dict[str, Any]:
    m = meta(ksvc)
    name = m["name"]
    traffic = (ksvc.get("spec") or {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
    out = []
    for t in traffic:
        entry = dict(t)
        if entry.get("latestRevision") or not entry.get("revisionName"):
            # A Service's latestRevision targets point at its Configuration (service reconciler).
            entry["configurationName"] = name
            entry["latestRevision"] = True
        out.append(entry)
    return {
        "apiVersion": SERVING_V1,
        "kind": "Route",
        "metadata": {
            "name": name,
            "namespace": m.get("namespace", "default"),
            "labels": {L_SERVICE: name},
            "ownerReferences": [owner_ref(ksvc, SERVING_V1, "Service")],
        },
        "spec": {"traffic": out},
    }


# ---- Configuration -> Revision ---------------------------------------------------------------


def revision_name(cfg: dict[str, Any]) -> str:
    template_name = meta((cfg.get("spec") or {}).get("template") or {}).get("name")
    if template_name:
        return str(template_name)
    return f"{meta(cfg)['name']}-{int(meta(cfg).get('generation') or 1):05d}"


def default_revision_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The webhook's defaults (`revision_defaults.go`, §2.5)."""
    out = copy.deepcopy(spec)
    out.setdefault("containerConcurrency", 0)
    out.setdefault("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
    containers = out.get("containers") or [{}]
    for c in containers:
        c.setdefault("name", USER_CONTAINER)
        probe = c.get("readinessProbe")
        if probe is None:
            c["readinessProbe"] = {"tcpSocket": {"port": 0}, "successThreshold": 1}
        else:
            probe.setdefault("successThreshold", 1)
            if probe.get("periodSeconds"):
                probe.setdefault("failureThreshold", 3)
                probe.setdefault("timeoutSeconds", 1)
    out["containers"] = containers
    return out


def make_revision(cfg: dict[str, Any]) -> dict[str, Any]:
    m = meta(cfg)
    template = (cfg.get("spec") or {}).get("template") or {}
    tmeta = meta(template)
    labels = dict(tmeta.get("labels") or {}) | {
        L_CONFIGURATION: m["name"],
        L_CONFIGURATION_UID: m.get("uid", ""),
        L_CONFIGURATION_GENERATION: str(m.get("generation") or 1),
    }
    cfg_labels = m.get("labels") or {}
    for key in (L_SERVICE, L_SERVICE_UID):
        if key in cfg_labels:
            labels[key] = cfg_labels[key]
    return {
        "apiVersion": SERVING_V1,
        "kind": "Revision",
        "metadata": {
            "name": revision_name(cfg),
            "namespace": m.get("namespace", "default"),
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [owner_ref(cfg, SERVING_V1, "Configuration")],
        },
        "spec": default_revision_spec(template.get("spec") or {}),
    }


# ---- Revision -> Deployment, PodAutoscaler ------------------------------------------------------


def pod_labels(rev: dict[str, Any]) -> dict[str, str]:
    """`makeLabels`: the revision's labels plus revision, revisionUID and app (CONTRACT.md §0)."""
    m = meta(rev)
    labels = {k: v for k, v in (m.get("labels") or {}).items() if k != L_ROUTE}
    labels[L_REVISION] = m["name"]
    labels[L_REVISION_UID] = m.get("uid", "")
    labels.setdefault("app", m["name"])
    return labels


def user_port(rev_spec: dict[str, Any]) -> tuple[int, str]:
    """(container port, protocol): the first container port, 8080 and http1 by default."""
    container = (rev_spec.get("containers") or [{}])[0]
    ports = container.get("ports") or []
    if ports:
        protocol = "h2c" if ports[0].get("name") == "h2c" else "http1"
        return int(ports[0].get("containerPort") or DEFAULT_USER_PORT), protocol
    return DEFAULT_USER_PORT, "http1"


def encode_readiness_probe(probe: dict[str, Any], port: int) -> str:
    """`applyReadinessProbeDefaults` + JSON (§2.5): host 127.0.0.1, the port resolved, exec
    replaced by a TCP probe on the user port, timeoutSeconds ≥ 1 when periodic."""
    p = copy.deepcopy(probe)
    if "exec" in p:
        del p["exec"]
        p["tcpSocket"] = {"port": port, "host": "127.0.0.1"}
    elif "httpGet" in p:
        http = p["httpGet"]
        if not isinstance(http.get("port"), int) or not http.get("port"):
            http["port"] = port
        http["host"] = "127.0.0.1"
        http.setdefault("scheme", "HTTP")
    elif "tcpSocket" in p:
        tcp = p["tcpSocket"]
        if not isinstance(tcp.get("port"), int) or not tcp.get("port"):
            tcp["port"] = port
        tcp["host"] = "127.0.0.1"
    elif "grpc" in p:
        p["grpc"].setdefault("port", port)
        p["grpc"].setdefault("service", "")
    if p.get("periodSeconds", 0) > 0 and p.get("timeoutSeconds", 0) < 1:
        p["timeoutSeconds"] = 1
    return json.dumps(p, separators=(",", ":"))


# config-observability of `sluice local`: Knative's defaults, every protocol none. `status` reads
# each pod's Stat on :9090, so the queue-proxies load no metrics SDK (it costs every pod ~90 ms of
# start-up CPU and ~8 MB: bench/RESULTS.md, issue 19).
LOCAL_OBSERVABILITY = '{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{}}'


def queue_env(rev: dict[str, Any], features: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The queue-proxy's environment exactly as `makeQueueContainer` sets it (CONTRACT.md §2.1)."""
    m = meta(rev)
    spec = rev.get("spec") or {}
    labels = m.get("labels") or {}
    port, protocol = user_port(spec)
    container = (spec.get("containers") or [{}])[0]
    probe = container.get("readinessProbe") or {}
    full_duplex = (m.get("annotations") or {}).get("features.knative.dev/http-full-duplex", "").lower() == "enabled"
    owner_kinds = {r.get("kind") for r in m.get("ownerReferences") or () if r.get("controller")}
    features = features or {}
    # SERVING_CONFIGURATION is set only when a Configuration controls the revision (§2.1).
    configuration = labels.get(L_CONFIGURATION, "") if "Configuration" in owner_kinds else ""
    response_start = int(spec.get("responseStartTimeoutSeconds") or 0)

    def fr(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    return [
        {"name": "SERVING_NAMESPACE", "value": m.get("namespace", "default")},
        {"name": "SERVING_SERVICE", "value": labels.get(L_SERVICE, "")},
        {"name": "SERVING_CONFIGURATION", "value": configuration},
        {"name": "SERVING_REVISION", "value": m["name"]},
        {"name": "QUEUE_SERVING_PORT", "value": str(QUEUE_H2C_PORT if protocol == "h2c" else QUEUE_HTTP_PORT)},
        {"name": "QUEUE_SERVING_TLS_PORT", "value": str(QUEUE_TLS_PORT)},
        {"name": "CONTAINER_CONCURRENCY", "value": str(int(spec.get("containerConcurrency") or 0))},
        {"name": "REVISION_TIMEOUT_SECONDS", "value": str(int(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS))},
        {"name": "REVISION_RESPONSE_START_TIMEOUT_SECONDS", "value": str(response_start)},
        {"name": "REVISION_IDLE_TIMEOUT_SECONDS", "value": str(int(spec.get("idleTimeoutSeconds") or 0))},
        {"name": "SERVING_POD", "valueFrom": fr("metadata.name")},
        {"name": "SERVING_POD_IP", "valueFrom": fr("status.podIP")},
        {"name": "SERVING_LOGGING_CONFIG", "value": ""},
        {"name": "SERVING_LOGGING_LEVEL", "value": ""},
        {"name": "USER_PORT", "value": str(port)},
        {"name": "SYSTEM_NAMESPACE", "value": SYSTEM_NAMESPACE},
        {"name": "SERVING_READINESS_PROBE", "value": encode_readiness_probe(probe, port) if probe else ""},
        {"name": "HOST_IP", "valueFrom": fr("status.hostIP")},
        {"name": "ENABLE_HTTP2_AUTO_DETECTION", "value": str(features.get("autodetect-http2") == "enabled").lower()},
        {"name": "ENABLE_HTTP_FULL_DUPLEX", "value": str(full_duplex).lower()},
        {"name": "ROOT_CA", "value": ""},
        {"name": "ENABLE_MULTI_CONTAINER_PROBES", "value": "false"},
        {"name": "OBSERVABILITY_CONFIG", "value": LOCAL_OBSERVABILITY},
    ]


def _drain_hook() -> dict[str, Any]:
    # §2.2 / §2.11: every container's preStop waits for the queue-proxy's drain.
    return {"preStop": {"httpGet": {"port": QUEUE_ADMIN_PORT, "path": "/wait-for-drain"}}}


def make_deployment(rev: dict[str, Any], replicas: int, features: dict[str, str] | None = None) -> dict[str, Any]:
    m = meta(rev)
    spec = rev.get("spec") or {}
    labels = pod_labels(rev)
    port, protocol = user_port(spec)
    user = copy.deepcopy((spec.get("containers") or [{}])[0])
    user.setdefault("name", USER_CONTAINER)
    probe = user.pop("readinessProbe", None) or {}
    if "exec" in probe:
        user["readinessProbe"] = probe  # exec probes stay on the user container (§2.2)
    user["ports"] = [{"name": "user-port", "containerPort": port, "protocol": "TCP"}]
    user["env"] = [
        *(user.get("env") or []),
        {"name": "PORT", "value": str(port)},
        {"name": "K_REVISION", "value": m["name"]},
        {"name": "K_CONFIGURATION", "value": labels.get(L_CONFIGURATION, "")},
        {"name": "K_SERVICE", "value": labels.get(L_SERVICE, "")},
    ]
    user["lifecycle"] = _drain_hook()
    serving = QUEUE_H2C_PORT if protocol == "h2c" else QUEUE_HTTP_PORT
    qp_probe: dict[str, Any] = {
        k: probe[k] for k in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold") if k in probe
    }
    qp_probe["httpGet"] = {"port": serving, "path": "/", "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]}
    queue = {
        "name": QUEUE_CONTAINER,
        "image": "sluice-queue-proxy",
        "ports": [
            {"name": "queue-port", "containerPort": serving, "protocol": "TCP"},
            {"name": "https-port", "containerPort": QUEUE_TLS_PORT, "protocol": "TCP"},
            {"name": "http-autometric", "containerPort": QUEUE_METRICS_PORT, "protocol": "TCP"},
            {"name": "http-usermetric", "containerPort": QUEUE_USER_METRICS_PORT, "protocol": "TCP"},
        ],
        "env": queue_env(rev, features),
        "readinessProbe": qp_probe,
        "lifecycle": _drain_hook(),
        "resources": {"requests": {"cpu": "25m"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    annotations = dict(m.get("annotations") or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{m['name']}-deployment",
            "namespace": m.get("namespace", "default"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(rev, SERVING_V1, "Revision")],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {L_REVISION_UID: m.get("uid", "")}},
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "containers": [user, queue],
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": int(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS),
                },
            },
        },
    }


def initial_replicas(rev: dict[str, Any], config_initial_scale: int = 1) -> int:
    """The Deployment's first `replicas`: initial-scale, raised to min-scale (Knative's
    `deploy.go` + the KPA then takes over through the /scale subresource)."""
    ann = meta(rev).get("annotations") or {}
    try:
        initial = int(ann.get(A_INITIAL_SCALE, config_initial_scale))
    except ValueError:
        initial = config_initial_scale
    try:
        minimum = int(ann.get(A_MIN_SCALE, 0))
    except ValueError:
        minimum = 0
    return max(initial, minimum)


def make_pa(rev: dict[str, Any], reachability: str) -> dict[str, Any]:
    m = meta(rev)
    spec = rev.get("spec") or {}
    annotations = dict(m.get("annotations") or {})
    # The webhook defaults the class and (for KPA) the metric (§4.2).
    annotations.setdefault(A_CLASS, KPA_CLASS)
    annotations.setdefault(A_METRIC, "concurrency")
    _, protocol = user_port(spec)
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": m["name"],
            "namespace": m.get("namespace", "default"),
            "labels": pod_labels(rev),
            "annotations": annotations,
            "ownerReferences": [owner_ref(rev, SERVING_V1, "Revision")],
        },
        "spec": {
            "containerConcurrency": int(spec.get("containerConcurrency") or 0),
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{m['name']}-deployment"},
            "reachability": reachability,
            "protocolType": protocol,
        },
    }


# ---- ServerlessService -> private / public Services (the SKS reconciler) -----------------------


def _service_labels(sks: dict[str, Any], kind: str) -> dict[str, str]:
    labels = dict(meta(sks).get("labels") or {})
    labels[L_SKS] = meta(sks)["name"]
    labels[L_SERVICE_TYPE] = kind
    return labels


def make_private_service(sks: dict[str, Any], selector: dict[str, str]) -> dict[str, Any]:
    """`<rev>-private`, selecting the revision's pods (`serverlessservice/resources/services.go`)."""
    m = meta(sks)
    h2c = (sks.get("spec") or {}).get("protocolType") == "h2c"
    name, port = ("http2", QUEUE_H2C_PORT) if h2c else ("http", QUEUE_HTTP_PORT)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{m['name']}-private",
            "namespace": m.get("namespace", "default"),
            "labels": _service_labels(sks, "Private"),
            "annotations": dict(m.get("annotations") or {}),
            "ownerReferences": [owner_ref(sks, "networking.internal.knative.dev/v1alpha1", "ServerlessService")],
        },
        "spec": {
            "selector": dict(selector),
            "ports": [
                {"name": name, "protocol": "TCP", "port": 81 if h2c else 80, "targetPort": port},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": QUEUE_TLS_PORT},
                {
                    "name": "http-autometric",
                    "protocol": "TCP",
                    "port": QUEUE_METRICS_PORT,
                    "targetPort": QUEUE_METRICS_PORT,
                },
                {
                    "name": "http-usermetric",
                    "protocol": "TCP",
                    "port": QUEUE_USER_METRICS_PORT,
                    "targetPort": QUEUE_USER_METRICS_PORT,
                },
                {"name": f"{name}-istio", "protocol": "TCP", "port": port, "targetPort": port},
            ],
        },
    }


def public_ports(h2c: bool) -> list[dict[str, Any]]:
    name, port = ("http2", QUEUE_H2C_PORT) if h2c else ("http", QUEUE_HTTP_PORT)
    return [
        {"name": name, "protocol": "TCP", "port": 81 if h2c else 80, "targetPort": port},
        {"name": "https", "protocol": "TCP", "port": 443, "targetPort": QUEUE_TLS_PORT},
    ]


def make_public_service(sks: dict[str, Any]) -> dict[str, Any]:
    """`<rev>`, without a selector: its Endpoints are written by the SKS reconciler (§0)."""
    m = meta(sks)
    h2c = (sks.get("spec") or {}).get("protocolType") == "h2c"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": m["name"],
            "namespace": m.get("namespace", "default"),
            "labels": _service_labels(sks, "Public"),
            "annotations": dict(m.get("annotations") or {}),
            "ownerReferences": [owner_ref(sks, "networking.internal.knative.dev/v1alpha1", "ServerlessService")],
        },
        "spec": {"ports": public_ports(h2c)},
    }
