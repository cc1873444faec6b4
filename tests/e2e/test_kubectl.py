"""The real kubectl against a real `sluice local` instance, with the kubeconfig it writes: the
everyday verbs of a Knative user (apply, get with printer columns, -w, describe with Events,
logs -f/--tail/-c, get events, explain, edit, delete) and the strict manifests of issue 15."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.conftest import EXAMPLES, Local
from tests.kubectl_support import SKIP_REASON, kubectl_binary

KUBECTL = kubectl_binary()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def kenv(local: Local, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("kubectl-home")  # its own discovery cache
    yield {**os.environ, "KUBECONFIG": str(local.home / "kubeconfig"), "HOME": str(home)}


def kubectl(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = kubectl(env, *args, stdin=stdin)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def manifest(name: str, command: list[str] | None, annotations: dict[str, str] | None = None) -> str:
    container: dict[str, object] = {"image": "autoscale-sample", "env": [{"name": "TARGET", "value": "kubectl"}]}
    if command is not None:
        container["command"] = command
        container["readinessProbe"] = {"httpGet": {"path": "/healthz"}}
    template: dict[str, object] = {"spec": {"containers": [container]}}
    template["metadata"] = {"annotations": {"autoscaling.knative.dev/window": "6s", **(annotations or {})}}
    body = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": template},
    }
    return yaml.safe_dump(body)


def wait(what: str, check: object, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = check()  # type: ignore[operator]
        if last:
            return str(last)
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_everyday_verbs(local: Local, kenv: dict[str, str], tmp_path: Path) -> None:
    name = "kubectl-hello"
    command = [sys.executable, str(EXAMPLES / "autoscale.py")]
    # apply without --validate=false: the server's OpenAPI v3 says it validates fields itself.
    assert f"service.serving.knative.dev/{name} created" in ok(kenv, "apply", "-f", "-", stdin=manifest(name, command))

    # The way Knative's docs wait for a Service.
    waited = kubectl(kenv, "wait", "ksvc", name, "--for=condition=Ready", "--timeout=60s", timeout=70)
    assert f"service.serving.knative.dev/{name} condition met" in waited.stdout, waited.stderr
    table = ok(kenv, "get", "ksvc", name)
    header = table.splitlines()[0].split()
    assert header == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"]
    assert f"{name}-00001" in table and f"http://{name}.default." in table

    pods = ok(kenv, "get", "pods", "-l", f"serving.knative.dev/service={name}")
    assert pods.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "2/2" in pods and "Running" in pods
    pod = pods.splitlines()[1].split()[0]
    wide = ok(kenv, "get", "pods", pod, "-o", "wide")
    assert "IP" in wide.splitlines()[0] and "sluice-local" in wide
    deploy = ok(kenv, "get", "deploy", f"{name}-00001-deployment")
    assert deploy.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    svcs = ok(kenv, "get", "svc", f"{name}-00001-private")
    assert "PORT(S)" in svcs and "9090/TCP" in svcs
    revs = ok(kenv, "get", "rev", "-l", f"serving.knative.dev/service={name}")
    assert "CONFIG NAME" in revs and "True" in revs

    # describe lists the pod's Events from the kubelet and the scheduler.
    described = ok(kenv, "describe", "pod", pod)
    events_part = described.split("Events:", 1)[1]
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        assert reason in events_part, described
    assert "is not pulled" in events_part
    assert "Created Configuration" in ok(kenv, "describe", "ksvc", name)
    events = ok(kenv, "get", "events", "--field-selector", f"involvedObject.name={pod}")
    assert events.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert f"pod/{pod}" in events

    # logs: user container (default), queue-proxy, --tail, and -f that sees new output.
    user = ok(kenv, "logs", pod, "--tail", "5")  # kubectl picks the first container
    assert "autoscale sample listening on" in user
    qp = ok(kenv, "logs", pod, "-c", "queue-proxy", "--tail", "1")
    assert len(qp.strip().splitlines()) == 1 and '"severity"' in qp
    # Editing the Service rolls a new revision.
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/value: kubectl$/value: edited/" "$1"\n')
    editor.chmod(0o755)
    edited = kubectl({**kenv, "KUBE_EDITOR": str(editor)}, "edit", "ksvc", name)
    assert edited.returncode == 0 and "edited" in edited.stdout, edited.stderr
    wait("revision 2 ready", lambda: ok(kenv, "get", "ksvc", name).count(f"{name}-00002") == 2)
    env_value = ok(kenv, "get", "ksvc", name, "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value}")
    assert env_value == "edited"

    # A crash: the kubelet restarts the container (a new log file), records BackOff, and keeps
    # the crashed run's output for --previous; `logs -f` follows into the new run.
    host = urlsplit(ok(kenv, "get", "ksvc", name, "-o", "jsonpath={.status.url}")).netloc
    pod2 = ok(kenv, "get", "pods", "-l", f"serving.knative.dev/revision={name}-00002", "-o", "name").split()[0]
    assert KUBECTL is not None
    follow = subprocess.Popen(
        [KUBECTL, "logs", "-f", pod2, "-c", "user-container", "--tail", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kenv,
    )
    try:
        time.sleep(1.0)
        assert follow.poll() is None, "kubectl logs -f ended early"
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(f"{local.url}/?crash=1", headers={"Host": host}), timeout=10)
        streamed = b""
        deadline = time.monotonic() + 30
        assert follow.stdout is not None
        while b"listening on" not in streamed and time.monotonic() < deadline:
            readable, _, _ = select.select([follow.stdout], [], [], 0.5)
            if readable:
                streamed += os.read(follow.stdout.fileno(), 65536)
        assert b"autoscale sample listening on" in streamed, streamed
    finally:
        follow.terminate()
        follow.communicate(timeout=10)
    events2 = ok(kenv, "get", "events", "--field-selector", f"involvedObject.name={pod2[4:]}")
    assert "BackOff" in events2, events2
    assert "listening on" in ok(kenv, "logs", pod2, "--previous")

    # explain reads the OpenAPI v3 document built from the CRD schema.
    explained = ok(kenv, "explain", "ksvc.spec.template.spec.containerConcurrency")
    assert "KIND:       Service" in explained and "<integer>" in explained

    # -w with Table: the header once, then a row per change.
    watch = subprocess.Popen([KUBECTL, "get", "ksvc", name, "-w"], stdout=subprocess.PIPE, text=True, env=kenv)
    try:
        time.sleep(1.5)
        ok(kenv, "annotate", "ksvc", name, "example.com/touched=yes")
        time.sleep(1.5)
    finally:
        watch.terminate()
        wout, _ = watch.communicate(timeout=10)
    lines = [ln for ln in wout.splitlines() if ln.strip()]
    assert lines[0].split()[:2] == ["NAME", "URL"] and len(lines) >= 3, wout
    assert sum(1 for ln in lines if ln.startswith("NAME")) == 1

    assert f'service.serving.knative.dev "{name}" deleted' in ok(kenv, "delete", "ksvc", name)
    wait("the pods to go", lambda: not ok(kenv, "get", "pods", "-l", f"serving.knative.dev/service={name}").strip(), 60)


def test_image_only_service_fails_with_a_reason(kenv: dict[str, str]) -> None:
    name = "kubectl-image-only"
    ok(kenv, "apply", "-f", "-", stdin=manifest(name, None))

    def failed() -> str:
        out = ok(kenv, "get", "ksvc", name)
        return out if "RevisionFailed" in out else ""

    table = wait("the Service to fail", failed, 30)
    assert "False" in table
    message = ok(kenv, "get", "ksvc", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].message}")
    assert "sluice local runs the container as a local process (image 'autoscale-sample' is not pulled)" in message
    assert "ContainerMissing" in ok(kenv, "get", "rev", f"{name}-00001")
    assert "RevisionFailed" in ok(kenv, "describe", "ksvc", name).split("Events:", 1)[1]
    ok(kenv, "delete", "ksvc", name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["spec"]["template"]["spec"].__setitem__("containerConcurency", 5),
            'strict decoding error: unknown field "spec.template.spec.containerConcurency"',
        ),
        (
            lambda d: d["spec"]["template"]["spec"].__setitem__(
                "contianers", d["spec"]["template"]["spec"].pop("containers")
            ),
            'unknown field "spec.template.spec.contianers"',
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][0].__setitem__("valeu", "x"),
            'unknown field "spec.template.spec.containers[0].env[0].valeu"',
        ),
        (
            lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(
                "autoscaling.knative.dev/targt", "10"
            ),
            'invalid key name "autoscaling.knative.dev/targt"',
        ),
    ],
)
def test_strict_manifests_through_kubectl(kenv: dict[str, str], change: object, expected: str) -> None:
    doc = yaml.safe_load(manifest("kubectl-strict", [sys.executable, "-c", "pass"]))
    change(doc)  # type: ignore[operator]
    done = kubectl(kenv, "apply", "-f", "-", stdin=yaml.safe_dump(doc))
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr
    assert kubectl(kenv, "get", "ksvc", "kubectl-strict").returncode != 0  # nothing was created
