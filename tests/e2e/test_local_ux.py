"""`sluice local` as a user drives it (issue 15, 3-5): status that tells the truth, the printed
URLs and curl hints working as printed, tag path prefixes, kn-style views, logs, the kubeconfig
context and a second `up`, all against the suite's real instance (tests/e2e/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, Local, cli, service

# A user container that logs one line per request (to stderr, as most apps do) and serves
# /healthz for its readiness probe.
APP = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/sleep"):
            time.sleep(3.0)
        body = ("hello from " + os.environ.get("K_REVISION", "?") + "\\n").encode()
        if self.path != "/healthz":
            print("served " + self.path, file=sys.stderr, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("app starting", file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _get(url: str, host: str | None = None, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _curl(command: str) -> tuple[int, str]:
    """Runs a printed `curl -H 'Host: X' URL` or `curl URL` hint (parsed, sent with urllib)."""
    words = shlex.split(command)
    assert words[0] == "curl", command
    host = words[words.index("-H") + 1].removeprefix("Host: ") if "-H" in words else None
    return _get(words[-1], host)


def _app(tmp_path: Path, name: str, **kw: Any) -> dict[str, Any]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    body = service(name, command=[sys.executable, str(app)], **kw)
    body["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = "1"
    return body


def _revision(local: Local, name: str) -> dict[str, Any]:
    svc = local.service(name) or {}
    revs = svc.get("revisions") or [{}]
    return dict(revs[-1])


@pytest.mark.timeout(120)
def test_status_right_after_apply_and_printed_urls_work(local: Local, tmp_path: Path) -> None:
    name = "ux-status"
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(_app(tmp_path, name)))
    assert cli(local.home, "apply", "-f", str(path)).returncode == 0
    # At once: the Service is listed, never "no services".
    first = cli(local.home, "status")
    assert name in first.stdout and "no services" not in first.stdout, first.stdout
    local.wait_for("ready", lambda: (local.service(name) or {}).get("ready") == "True" and local.ready_pods(name), 60)
    out = cli(local.home, "status").stdout
    assert "/-1" not in out
    url = f"http://{name}.default.127.0.0.1.sslip.io:{local.port}"
    assert url in out, out  # the URL carries the ingress port
    hint = next(line.strip() for line in out.splitlines() if line.strip().startswith(f"curl -H 'Host: {name}."))
    host_form, path_form = hint.split("    or    ")
    assert host_form == f"curl -H 'Host: {name}.default.127.0.0.1.sslip.io' http://127.0.0.1:{local.port}/"
    for command in (host_form, path_form):
        code, body = _curl(command)
        assert code == 200 and body.startswith("hello from"), (command, code, body)


@pytest.mark.timeout(120)
def test_queue_depth_is_live(local: Local, tmp_path: Path) -> None:
    name = "ux-queue"
    local.apply(_app(tmp_path, name))
    local.wait_for("ready", lambda: local.ready_pods(name) >= 1, 60)
    url = f"{local.url}/{name}/sleep"
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_get, url) for _ in range(8)]
        # Eight 3 s requests at the pod: the Stat of the last second shows them.
        local.wait_for("queue depth under load", lambda: _revision(local, name).get("queue_depth", 0) >= 4, 20)
        assert all(f.result()[0] == 200 for f in futures)
    # Load over: within a reporting period or two the depth is 0 again (the old gauge stayed at 8).
    local.wait_for("queue depth back to 0", lambda: _revision(local, name).get("queue_depth") == 0, 15)
    done = cli(local.home, "status", "--json")
    rev = next(s for s in json.loads(done.stdout)["services"] if s["name"] == name)["revisions"][0]
    assert rev["queue_depth"] == 0 and rev["concurrency"] == 0


@pytest.mark.timeout(150)
def test_tags_by_path_and_kn_views(local: Local, tmp_path: Path) -> None:
    name = "ux-tags"
    local.apply(_app(tmp_path, name, revision=f"{name}-one"))
    local.wait_for("first revision ready", lambda: (local.service(name) or {}).get("latest_ready") == f"{name}-one", 60)
    traffic = [
        {"revisionName": f"{name}-one", "percent": 50, "tag": "v1"},
        {"latestRevision": True, "percent": 50, "tag": "v2"},
    ]
    local.apply(_app(tmp_path, name, revision=f"{name}-two", env={"X": "2"}, traffic=traffic))
    # `latestRevision: true` follows the latest *ready* revision, so v2 names ux-tags-one in the
    # Route's status until ux-tags-two is ready (as in Knative): wait for the split it converges to.
    want = {"v1": f"{name}-one", "v2": f"{name}-two"}
    local.wait_for(
        "split",
        lambda: {t.get("tag"): t.get("revisionName") for t in (local.service(name) or {}).get("traffic", [])} == want,
        60,
    )
    local.wait_for("pods", lambda: all(r["ready_pods"] for r in (local.service(name) or {})["revisions"]), 60)

    # Path prefix `/<tag>-<route>/` reaches that tag's revision, as its Host does.
    for tag, rev in (("v1", f"{name}-one"), ("v2", f"{name}-two")):
        code, body = _get(f"{local.url}/{tag}-{name}/")
        assert (code, body.strip()) == (200, f"hello from {rev}")
        code, body = _get(f"{local.url}/", f"{tag}-{name}.default.127.0.0.1.sslip.io")
        assert (code, body.strip()) == (200, f"hello from {rev}")

    status = cli(local.home, "status").stdout
    assert f"tag v1 → {name}-one" in status and f"curl http://127.0.0.1:{local.port}/v2-{name}/" in status

    def service_row() -> list[str]:
        listing = cli(local.home, "service", "list").stdout.splitlines()
        assert listing[0].split() == ["NAME", "URL", "LATEST", "AGE", "CONDITIONS", "READY", "REASON"]
        return next(line.split() for line in listing if line.startswith(name + " "))

    # The ingress routes as soon as the pods are ready; the Service's conditions follow with the
    # controller's next pass over the Knative objects (as in Knative, where kn shows it briefly).
    local.wait_for("service Ready", lambda: service_row()[4:] == ["3", "OK", "/", "3", "True"], 30)
    row = service_row()
    assert row[1:3] == [f"http://{name}.default.127.0.0.1.sslip.io:{local.port}", f"{name}-two"]

    desc = cli(local.home, "service", "describe", name).stdout
    assert f" 50%  {name}-one #v1" in desc and f" 50%  @latest ({name}-two) #v2" in desc, desc
    assert "++ Ready" in desc
    assert cli(local.home, "service", "describe", "nope").returncode == 1

    revs = cli(local.home, "revision", "list", "-s", name).stdout.splitlines()
    assert revs[0].split()[:4] == ["NAME", "SERVICE", "TRAFFIC", "TAGS"]
    assert revs[1].split()[:4] == [f"{name}-two", name, "50%", "v2"]
    assert revs[2].split()[:4] == [f"{name}-one", name, "50%", "v1"]


@pytest.mark.timeout(120)
def test_logs(local: Local, tmp_path: Path) -> None:
    name = "ux-logs"
    local.apply(_app(tmp_path, name))
    local.wait_for("ready", lambda: local.ready_pods(name) >= 1, 60)
    pod = local.pods(name)[0]["name"]
    assert _get(f"{local.url}/{name}/first")[0] == 200
    out = cli(local.home, "logs", name).stdout.splitlines()
    assert f"[pod/{pod}/user-container] app starting" in out
    assert f"[pod/{pod}/user-container] served /first" in out
    assert cli(local.home, "logs", name, "--tail", "1").stdout.splitlines() == [
        f"[pod/{pod}/user-container] served /first"
    ]
    qp = cli(local.home, "logs", name, "-c", "queue-proxy").stdout.splitlines()
    assert qp and all(line.startswith(f"[pod/{pod}/queue-proxy] ") for line in qp)
    assert json.loads(qp[0].split("] ", 1)[1])["logger"] == "queueproxy"
    assert "not found" in cli(local.home, "logs", "nope").stderr

    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice.local.cli",
            "local",
            "--home",
            str(local.home),
            "logs",
            name,
            "-f",
            "--tail",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        time.sleep(1.5)
        assert _get(f"{local.url}/{name}/followed")[0] == 200

        async def line() -> str:
            assert follow.stdout is not None
            return await asyncio.wait_for(asyncio.to_thread(follow.stdout.readline), 15)

        assert asyncio.run(line()).strip() == f"[pod/{pod}/user-container] served /followed"
    finally:
        follow.terminate()
        follow.wait(10)


@pytest.mark.timeout(60)
def test_kubeconfig_print_merge_unmerge(local: Local, tmp_path: Path) -> None:
    printed = cli(local.home, "kubeconfig")
    assert printed.stdout.strip() == str(local.home / "kubeconfig")

    home = tmp_path / "home"
    kube = home / ".kube" / "config"
    kube.parent.mkdir(parents=True)
    other = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
        "users": [{"name": "prod", "user": {"token": "secret"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
        "current-context": "prod",
    }
    kube.write_text(yaml.safe_dump(other))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(home)}

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(local.home), "kubeconfig", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env | (extra or {}), timeout=30)

    done = run("--merge")
    assert done.returncode == 0 and "merged context 'sluice-local'" in done.stdout, done
    merged = yaml.safe_load(kube.read_text())
    assert merged["current-context"] == "prod"  # never switched behind the user's back
    assert [c["name"] for c in merged["contexts"]] == ["prod", "sluice-local"]
    assert merged["users"][0] == other["users"][0]
    assert yaml.safe_load((kube.parent / "config.sluice-backup").read_text()) == other
    assert oct(kube.stat().st_mode & 0o777) == "0o600"
    assert "already up to date" in run("--merge").stdout
    assert len(yaml.safe_load(kube.read_text())["contexts"]) == 2

    # The merged context reaches the running instance's API.
    async def services() -> list[str]:
        from sluice.local.kube import ALL, Kube
        from sluice.local.kubeapi import kube_client_from_kubeconfig

        api = await kube_client_from_kubeconfig(kube, context="sluice-local")
        try:
            return [s["metadata"]["name"] for s in await Kube(api).list(ALL.SERVICES, "default")]
        finally:
            await api.close()

    local.apply(_app(tmp_path, "ux-kubectl"))
    assert "ux-kubectl" in asyncio.run(services())
    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # and kubectl itself, as a user types it
        got = subprocess.run(
            [kubectl, "--context", "sluice-local", "get", "ksvc", "-o", "name"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert set(asyncio.run(services())) == {line.split("/")[-1] for line in got.stdout.split()}

    # $KUBECONFIG's first file is the one written.
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    done = run("--merge", extra={"KUBECONFIG": f"{first}{os.pathsep}{second}"})
    assert done.returncode == 0 and first.exists() and not second.exists()

    assert "removed" in run("--unmerge").stdout
    left = yaml.safe_load(kube.read_text())
    assert [c["name"] for c in left["contexts"]] == ["prod"] and left["current-context"] == "prod"
    assert "no 'sluice-local' entries" in run("--unmerge").stdout


@pytest.mark.timeout(60)
def test_second_up_applies_and_names_ignored_options(local: Local, tmp_path: Path) -> None:
    name = "ux-second-up"
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(_app(tmp_path, name)))
    done = cli(local.home, "up", "-f", str(path), "--port", "1", "--domain", "example.com")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"already running on http://127.0.0.1:{local.port} (pid {local.proc.pid})" in out, out
    assert f"applied {path}" in out
    assert "--port 1, --domain example.com ignored" in out and "sluice local down" in out
    local.wait_for("applied", lambda: local.service(name), 20)
    # The same options as the running instance are not "ignored".
    again = cli(local.home, "up", "--port", str(local.port))
    assert again.returncode == 0 and "ignored" not in again.stdout, again.stdout


@pytest.mark.timeout(60)
def test_new_commands_without_an_instance(tmp_path: Path) -> None:
    home = tmp_path / "home"
    helped = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    for command in ("kubeconfig", "logs", "service", "revision"):
        assert command in helped.stdout
    printed = cli(home, "kubeconfig")
    assert printed.returncode == 0 and printed.stdout.strip() == str(home / "kubeconfig")
    assert "not running" in printed.stderr
    for args in (("kubeconfig", "--merge"), ("logs", "x"), ("service", "list"), ("revision", "list")):
        done = cli(home, *args)
        assert done.returncode == 1 and "not running" in done.stderr, (args, done.stderr)
