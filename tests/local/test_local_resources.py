"""The objects the mini-controller derives (CONTRACT.md §0, §2.1, §2.2) and kubelet helpers."""

from __future__ import annotations

import json
from typing import Any

from sluice.local.controller.resources import (
    initial_replicas,
    make_configuration,
    make_deployment,
    make_pa,
    make_private_service,
    make_revision,
    make_route,
    queue_env,
)
from sluice.local.kubelet import expand, resolve_env, rewrite_probe_port

KSVC: dict[str, Any] = {
    "metadata": {"name": "hello", "namespace": "ns1", "uid": "svc-uid", "generation": 2},
    "spec": {
        "template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "2"}},
            "spec": {
                "containerConcurrency": 4,
                "timeoutSeconds": 45,
                "idleTimeoutSeconds": 10,
                "containers": [
                    {
                        "image": "x",
                        "command": ["app"],
                        "ports": [{"containerPort": 9000}],
                        "readinessProbe": {"httpGet": {"path": "/ready"}, "periodSeconds": 2},
                    }
                ],
            },
        }
    },
}


def revision() -> dict[str, Any]:
    cfg = make_configuration(KSVC)
    cfg["metadata"] |= {"uid": "cfg-uid", "generation": 3}
    rev = make_revision(cfg)
    rev["metadata"]["uid"] = "rev-uid"
    return rev


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_names_labels_and_owners_follow_knative() -> None:
    rev = revision()
    assert rev["metadata"]["name"] == "hello-00003"
    labels = rev["metadata"]["labels"]
    assert labels["serving.knative.dev/configuration"] == "hello"
    assert labels["serving.knative.dev/configurationGeneration"] == "3"
    assert labels["serving.knative.dev/service"] == "hello"
    assert rev["metadata"]["ownerReferences"][0]["kind"] == "Configuration"
    dep = make_deployment(rev, 2)
    assert dep["metadata"]["name"] == "hello-00003-deployment"
    assert dep["spec"]["selector"]["matchLabels"] == {"serving.knative.dev/revisionUID": "rev-uid"}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["serving.knative.dev/revision"] == "hello-00003"
    assert pod_labels["app"] == "hello-00003"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    pa = make_pa(rev, "Reachable")
    assert pa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hello-00003-deployment",
    }
    assert pa["spec"]["containerConcurrency"] == 4
    assert pa["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert initial_replicas(rev) == 2  # raised to min-scale
    route = make_route(KSVC)
    assert route["spec"]["traffic"] == [{"latestRevision": True, "percent": 100, "configurationName": "hello"}]


def test_queue_proxy_env_is_the_contract() -> None:
    env = {e["name"]: e for e in queue_env(revision())}
    value = {k: e.get("value") for k, e in env.items()}
    assert value["SERVING_NAMESPACE"] == "ns1"
    assert value["SERVING_SERVICE"] == "hello"
    assert value["SERVING_CONFIGURATION"] == "hello"
    assert value["SERVING_REVISION"] == "hello-00003"
    assert value["QUEUE_SERVING_PORT"] == "8012"
    assert value["QUEUE_SERVING_TLS_PORT"] == "8112"
    assert value["USER_PORT"] == "9000"
    assert value["CONTAINER_CONCURRENCY"] == "4"
    assert value["REVISION_TIMEOUT_SECONDS"] == "45"
    assert value["REVISION_RESPONSE_START_TIMEOUT_SECONDS"] == "0"
    assert value["REVISION_IDLE_TIMEOUT_SECONDS"] == "10"
    assert value["SERVING_LOGGING_CONFIG"] == "" and value["SERVING_LOGGING_LEVEL"] == ""
    assert env["SERVING_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SERVING_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    probe = json.loads(str(value["SERVING_READINESS_PROBE"]))
    assert probe["httpGet"] == {"path": "/ready", "port": 9000, "host": "127.0.0.1", "scheme": "HTTP"}
    assert probe["timeoutSeconds"] == 1 and probe["failureThreshold"] == 3


def test_pod_context_of_section_2_2() -> None:
    dep = make_deployment(revision(), 1)
    user, qp = dep["spec"]["template"]["spec"]["containers"]
    assert "readinessProbe" not in user  # the queue-proxy runs it (§2.2)
    assert env_of(user)["PORT"] == "9000"
    for c in (user, qp):
        assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 8022, "path": "/wait-for-drain"}
    assert qp["name"] == "queue-proxy"
    assert qp["readinessProbe"]["httpGet"]["port"] == 8012
    assert qp["readinessProbe"]["httpGet"]["httpHeaders"] == [{"name": "K-Network-Probe", "value": "queue"}]
    assert qp["readinessProbe"]["periodSeconds"] == 2
    assert [p["name"] for p in qp["ports"]] == ["queue-port", "https-port", "http-autometric", "http-usermetric"]


def test_default_readiness_probe_is_tcp_on_the_user_port() -> None:
    ksvc = json.loads(json.dumps(KSVC))
    del ksvc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    del ksvc["spec"]["template"]["spec"]["containers"][0]["ports"]
    cfg = make_configuration(ksvc)
    env = {e["name"]: e.get("value") for e in queue_env(make_revision(cfg))}
    assert json.loads(str(env["SERVING_READINESS_PROBE"])) == {
        "tcpSocket": {"port": 8080, "host": "127.0.0.1"},
        "successThreshold": 1,
    }


def test_private_service_ports() -> None:
    sks = {
        "metadata": {"name": "r1", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
        "spec": {"protocolType": "http1"},
    }
    svc = make_private_service(sks, {"serving.knative.dev/revisionUID": "x"})
    assert svc["metadata"]["name"] == "r1-private"
    assert svc["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == "Private"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {
        "http": (80, 8012),
        "https": (443, 8112),
        "http-autometric": (9090, 9090),
        "http-usermetric": (9091, 9091),
        "http-istio": (8012, 8012),
    }


def test_kubelet_env_resolution_and_probe_rewrite() -> None:
    pod = {"metadata": {"name": "p1", "namespace": "ns"}}
    container = {
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-y"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
    }
    assert resolve_env(container, pod, "127.9.1.1") == {"A": "x", "B": "x-y", "IP": "127.9.1.1"}
    assert expand("$(MISSING) $(A)", {"A": "1"}) == "$(MISSING) 1"
    text = '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'
    assert json.loads(rewrite_probe_port(text, 8080, 40001))["tcpSocket"]["port"] == 40001
