"""What the embedded API serves for kubectl, checked on the wire: Table responses (lists, single
objects, watches), OpenAPI v3, `fieldValidation` Strict/Warn/Ignore, Knative's webhook through
the admission hook, server-side apply, the pod `log` subresource; and the real kubectl's view of
field validation (its warnings and refusals) against the same server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy

from sluice.local.kubeapi import EmbeddedAPIServer
from sluice.local.kubeapi.tables import human_duration, jsonpath
from sluice.local.webhook import WEBHOOK, admission_hook
from tests.kubectl_support import SKIP_REASON, kubectl_binary

from .conftest import client_ssl, pod_body

TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
KSVC = "/apis/serving.knative.dev/v1/namespaces/default/services"


def ksvc(name: str = "hello", **template_spec: Any) -> dict[str, Any]:
    spec = {"containers": [{"image": "x", "command": ["true"]}], **template_spec}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": spec}},
    }


async def call(
    server: EmbeddedAPIServer,
    method: str,
    path: str,
    body: Any = None,
    ctype: str = "application/json",
    accept: str = "application/json",
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    headers = {"Content-Type": ctype, "Accept": accept, "Authorization": f"Bearer {server.token}"}
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.url + path, data=data, headers=headers, ssl=client_ssl(server)) as r,
    ):
        raw = await r.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode()
        return r.status, parsed, r.headers


# ---------------------------------------------------------------- field validation


async def test_strict_names_every_unknown_field(server: EmbeddedAPIServer) -> None:
    body = ksvc(containerConcurency=5)
    body["spec"]["template"]["spec"]["containers"][0]["valeu"] = "x"
    body["metadata"]["labelz"] = {}
    code, st, _ = await call(server, "POST", KSVC + "?fieldValidation=Strict", body)
    assert (code, st["reason"]) == (400, "BadRequest")
    # In document order, as the strict decoder meets them.
    assert st["message"] == (
        'Service in version "v1" cannot be handled as a Service: strict decoding error: '
        'unknown field "metadata.labelz", unknown field "spec.template.spec.containers[0].valeu", '
        'unknown field "spec.template.spec.containerConcurency"'
    )
    code, _, _ = await call(server, "GET", KSVC + "/hello")
    assert code == 404


async def test_misspelled_containers_is_named(server: EmbeddedAPIServer) -> None:
    body = ksvc()
    body["spec"]["template"]["spec"]["contianers"] = body["spec"]["template"]["spec"].pop("containers")
    code, st, _ = await call(server, "POST", KSVC + "?fieldValidation=Strict", body)
    assert code == 400 and 'unknown field "spec.template.spec.contianers"' in st["message"]


async def test_warn_is_the_default_and_ignore_prunes_quietly(server: EmbeddedAPIServer) -> None:
    code, obj, headers = await call(server, "POST", KSVC, ksvc("warned", containerConcurency=5))
    assert code == 201
    assert headers.getall("Warning") == ['299 - "unknown field \\"spec.template.spec.containerConcurency\\""']
    assert "containerConcurency" not in obj["spec"]["template"]["spec"]  # pruned as before
    code, _, headers = await call(server, "POST", KSVC + "?fieldValidation=Ignore", ksvc("ignored", foo=1))
    assert code == 201 and "Warning" not in headers
    code, st, _ = await call(server, "POST", KSVC + "?fieldValidation=Loud", ksvc("loud"))
    assert code == 400 and "fieldValidation parameter unsupported" in st["message"]


async def test_strict_patch_is_invalid_on_the_patch(server: EmbeddedAPIServer) -> None:
    assert (await call(server, "POST", KSVC, ksvc()))[0] == 201
    patch = {"spec": {"template": {"spec": {"containerConcurency": 2}}}}
    code, st, _ = await call(
        server, "PATCH", KSVC + "/hello?fieldValidation=Strict", patch, "application/merge-patch+json"
    )
    assert (code, st["reason"]) == (422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "patch"
    assert (
        'Invalid value: "map[spec:map[template:map[spec:map[containerConcurency:2]]]]": strict decoding error'
        in (st["message"])
    )


# ---------------------------------------------------------------- Knative's webhook


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"autoscaling.knative.dev/window": "2s"}, "expected 6s <= 2s <= 1h0m0s: spec.template.metadata.annotations"),
        ({"autoscaling.knative.dev/target": "0"}, "target 0 should be at least 0.01"),
        ({"autoscaling.knative.dev/target": "-3"}, "target -3 should be at least 0.01"),
        (
            {"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "2"},
            "max-scale=2 is less than min-scale=5",
        ),
        ({"autoscaling.knative.dev/scale-down-delay": "2h"}, "expected 0s <= 2h <= 1h0m0s"),
        ({"autoscaling.knative.dev/panic-window-percentage": "0.5"}, "expected 1 <= 0.5 <= 100"),
        ({"autoscaling.knative.dev/metric": "cpu"}, "invalid value: cpu: spec.template.metadata.annotations"),
        ({"autoscaling.knative.dev/initial-scale": "0"}, "initial-scale=0 not allowed by cluster"),
        ({"autoscaling.knative.dev/targt": "10"}, 'invalid key name "autoscaling.knative.dev/targt"'),
        ({"autoscaling.knative.dev/minScale": "x"}, "invalid value: x: spec.template.metadata.annotations"),
    ],
)
async def test_the_webhook_refuses_with_knatives_messages(
    server: EmbeddedAPIServer, annotations: dict[str, str], message: str
) -> None:
    server.add_admission("serving.knative.dev", "services", WEBHOOK, admission_hook)
    body = ksvc()
    body["spec"]["template"]["metadata"] = {"annotations": annotations}
    code, st, _ = await call(server, "POST", KSVC, body)
    assert (code, st["reason"]) == (400, "BadRequest"), st
    assert st["message"].startswith(f'admission webhook "{WEBHOOK}" denied the request: validation failed: ')
    assert message in st["message"]


async def test_the_webhook_reads_config_autoscaler(server: EmbeddedAPIServer) -> None:
    server.add_admission("serving.knative.dev", "services", WEBHOOK, admission_hook)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knative-serving"}}
    assert (await call(server, "POST", "/api/v1/namespaces", ns))[0] == 201
    cm = {"metadata": {"name": "config-autoscaler"}, "data": {"allow-zero-initial-scale": "true"}}
    assert (await call(server, "POST", "/api/v1/namespaces/knative-serving/configmaps", cm))[0] == 201
    body = ksvc()
    body["spec"]["template"]["metadata"] = {"annotations": {"autoscaling.knative.dev/initial-scale": "0"}}
    code, _, _ = await call(server, "POST", KSVC, body)
    assert code == 201
    # Updates are admitted too.
    patch = {"spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/window": "1s"}}}}}
    code, st, _ = await call(server, "PATCH", KSVC + "/hello", patch, "application/merge-patch+json")
    assert code == 400 and "expected 6s <= 1s <= 1h0m0s" in st["message"]


# ---------------------------------------------------------------- tables


def test_jsonpath_and_durations() -> None:
    obj = {
        "metadata": {"labels": {"serving.knative.dev/configuration": "hello"}},
        "status": {"conditions": [{"type": "Other", "status": "X"}, {"type": "Ready", "status": "True"}]},
    }
    assert jsonpath(obj, ".status.conditions[?(@.type=='Ready')].status") == ["True"]
    assert jsonpath(obj, ".metadata.labels['serving\\.knative\\.dev/configuration']") == ["hello"]
    assert jsonpath(obj, ".status.missing") == []
    assert [human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60, 30 * 3600, 3 * 86400 + 3600)] == [
        "5s",
        "119s",
        "2m30s",
        "10m",
        "3h1m",
        "30h",
        "3d1h",
    ]


async def test_crd_printer_columns_as_a_table(server: EmbeddedAPIServer) -> None:
    assert (await call(server, "POST", KSVC, ksvc()))[0] == 201
    status = {
        "status": {
            "url": "http://hello.default.example.com",
            "latestCreatedRevisionName": "hello-00001",
            "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}],
        }
    }
    await call(server, "PATCH", KSVC + "/hello/status", status, "application/merge-patch+json")
    code, t, _ = await call(server, "GET", KSVC, accept=TABLE)
    assert (code, t["kind"], t["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name",
        "URL",
        "LatestCreated",
        "LatestReady",
        "Ready",
        "Reason",
    ]
    assert t["rows"][0]["cells"] == [
        "hello",
        "http://hello.default.example.com",
        "hello-00001",
        None,
        "False",
        "RevisionFailed",
    ]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    code, one, _ = await call(server, "GET", KSVC + "/hello?includeObject=Object", accept=TABLE)
    assert one["rows"][0]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] == "x"
    # Without the Table media type the list is a plain list.
    code, plain, _ = await call(server, "GET", KSVC)
    assert plain["kind"] == "ServiceList"


async def test_pod_columns_and_wide(server: EmbeddedAPIServer) -> None:
    pod = pod_body("p1")
    assert (await call(server, "POST", "/api/v1/namespaces/default/pods", pod))[0] == 201
    status = {
        "status": {
            "phase": "Running",
            "podIP": "127.0.1.5",
            "containerStatuses": [
                {"name": "c", "ready": False, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ],
        }
    }
    await call(server, "PATCH", "/api/v1/namespaces/default/pods/p1/status", status, "application/merge-patch+json")
    _, t, _ = await call(server, "GET", "/api/v1/namespaces/default/pods", accept=TABLE)
    names = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert names[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert ("IP", 1) in names and ("Node", 1) in names
    cells = t["rows"][0]["cells"]
    assert cells[:4] == ["p1", "0/1", "CrashLoopBackOff", 3] and cells[5] == "127.0.1.5"


async def test_watch_sends_tables(server: EmbeddedAPIServer) -> None:
    headers = {"Accept": TABLE, "Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession() as s:
        url = server.url + KSVC + "?watch=true&timeoutSeconds=5"
        async with s.get(url, headers=headers, ssl=client_ssl(server)) as r:
            await asyncio.sleep(0.2)
            assert (await call(server, "POST", KSVC, ksvc("watched")))[0] == 201
            line = await asyncio.wait_for(r.content.readline(), 5)
    event = json.loads(line)
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][0] == "watched"


# ---------------------------------------------------------------- openapi, server-side apply, logs


async def test_openapi_v3_index_and_documents(server: EmbeddedAPIServer) -> None:
    code, index, _ = await call(server, "GET", "/openapi/v3")
    assert code == 200 and "apis/serving.knative.dev/v1" in index["paths"] and "api/v1" in index["paths"]
    url = index["paths"]["apis/serving.knative.dev/v1"]["serverRelativeURL"]
    code, doc, headers = await call(server, "GET", url)
    assert code == 200 and headers["Cache-Control"] == "public, immutable"
    schema = doc["components"]["schemas"]["dev.knative.serving.v1.Service"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "serving.knative.dev", "kind": "Service", "version": "v1"}
    ]
    assert (
        "containerConcurrency"
        in schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]
    )
    patch = doc["paths"]["/apis/serving.knative.dev/v1/namespaces/{namespace}/services/{name}"]["patch"]
    # kubectl leaves validation to a server whose PATCH takes fieldValidation.
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert (await call(server, "GET", "/openapi/v3/apis/nope/v1"))[0] == 404


async def test_server_side_apply_creates_then_merges(server: EmbeddedAPIServer) -> None:
    applied = yaml.safe_dump(ksvc("ssa")).encode()
    q = "?fieldManager=kubectl&fieldValidation=Strict"
    code, obj, _ = await call(server, "PATCH", KSVC + "/ssa" + q, applied, "application/apply-patch+yaml")
    assert code == 201 and obj["metadata"]["name"] == "ssa"
    changed = ksvc("ssa", timeoutSeconds=30)
    code, obj, _ = await call(
        server, "PATCH", KSVC + "/ssa" + q, yaml.safe_dump(changed).encode(), "application/apply-patch+yaml"
    )
    assert code == 200 and obj["spec"]["template"]["spec"]["timeoutSeconds"] == 30


class _Logs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path | None:
        path = self.root / f"{namespace}_{pod}" / (f"{container}.previous.log" if previous else f"{container}.log")
        return path if path.exists() else None


async def test_pod_log_subresource(server: EmbeddedAPIServer, tmp_path: Path) -> None:
    pod = pod_body("lp")
    pod["spec"]["containers"].append({"name": "queue-proxy", "image": "qp"})
    assert (await call(server, "POST", "/api/v1/namespaces/default/pods", pod))[0] == 201
    base = "/api/v1/namespaces/default/pods/lp/log"
    code, st, _ = await call(server, "GET", base)
    assert (
        code == 400
        and "a container name must be specified for pod lp, choose one of: [user-container queue-proxy]"
        in st["message"]
    )
    code, st, _ = await call(server, "GET", base + "?container=user-container")
    assert code == 400 and 'container "user-container" in pod "lp" is waiting to start' in st["message"]
    server.pod_logs = _Logs(tmp_path)
    (tmp_path / "default_lp").mkdir()
    log = tmp_path / "default_lp" / "user-container.log"
    log.write_text("one\ntwo\nthree\n")
    code, text, _ = await call(server, "GET", base + "?container=user-container&tailLines=2")
    assert (code, text) == (200, "two\nthree\n")
    code, text, _ = await call(server, "GET", base + "?container=user-container&limitBytes=5")
    assert text == "one\nt"
    code, st, _ = await call(server, "GET", base + "?container=nope")
    assert code == 400 and "container nope is not valid for pod lp" in st["message"]
    # follow: what is appended arrives; the stream ends when the pod is deleted.
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            server.url + base + "?container=user-container&follow=true&tailLines=0",
            headers=headers,
            ssl=client_ssl(server),
        ) as r,
    ):
        await asyncio.sleep(0.3)
        with log.open("a") as f:
            f.write("four\n")
        line = await asyncio.wait_for(r.content.readline(), 5)
        assert line == b"four\n"
        await call(server, "DELETE", "/api/v1/namespaces/default/pods/lp")
        rest = await asyncio.wait_for(r.content.read(), 5)
        assert rest == b""


# ---------------------------------------------------------------- the real kubectl


@pytest.mark.skipif(kubectl_binary() is None, reason=SKIP_REASON)
async def test_kubectl_sees_warnings_and_refusals(server: EmbeddedAPIServer, kubeconfig: Path, tmp_path: Path) -> None:
    kubectl = kubectl_binary()
    assert kubectl is not None
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    async def run(*args: str, stdin: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            kubectl,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    bad = yaml.safe_dump(ksvc("kc", containerConcurency=3))
    code, _, err = await run("apply", "-f", "-", stdin=bad)
    assert code == 1 and 'strict decoding error: unknown field "spec.template.spec.containerConcurency"' in err
    code, out, err = await run("apply", "--validate=warn", "-f", "-", stdin=bad)
    assert code == 0 and "created" in out
    assert 'Warning: unknown field "spec.template.spec.containerConcurency"' in err
    code, out, err = await run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(ksvc("kc-ssa")))
    assert code == 0 and "serverside-applied" in out, err


async def test_events_k8s_io_is_a_view_of_core_events(server: EmbeddedAPIServer) -> None:
    event = {
        "metadata": {"name": "p.1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "source": {"component": "kubelet"},
        "count": 3,
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    assert (await call(server, "POST", "/api/v1/namespaces/default/events", event))[0] == 201
    path = "/apis/events.k8s.io/v1/namespaces/default/events"
    code, got, _ = await call(server, "GET", path + "?fieldSelector=involvedObject.name=p")
    assert code == 200 and got["kind"] == "EventList"
    (item,) = got["items"]
    assert item["apiVersion"] == "events.k8s.io/v1"
    assert (item["regarding"]["name"], item["note"], item["deprecatedCount"]) == ("p", event["message"], 3)
    _, table_, _ = await call(server, "GET", path, accept=TABLE)
    assert table_["rows"][0]["cells"][2:4] == ["BackOff", "pod/p"]
    code, st, _ = await call(server, "POST", path, event)
    assert code == 405 and "read-only" in st["message"]


async def test_built_in_kinds_check_their_top_level_fields(server: EmbeddedAPIServer) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}, "dta": {}}
    code, st, _ = await call(server, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", cm)
    assert code == 400 and 'unknown field "dta"' in st["message"]
    code, obj, headers = await call(server, "POST", "/api/v1/namespaces/default/configmaps", cm)
    assert code == 201 and "dta" not in obj and headers.getall("Warning") == ['299 - "unknown field \\"dta\\""']
