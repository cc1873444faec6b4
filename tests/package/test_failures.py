"""Clear failures (issue 14 §5), with real processes: broken package data stops `sluice local up`
at once with one message naming the file; Ctrl-C during start-up and a failed start stop every
process and leave no temporary file; the components' `--help`/`--version`, and their single
structured log line when there is no cluster to talk to."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT

from .support import Run

PACKAGES = ("sluice", "proxy", "activator", "autoscaler")
DATA = Path("sluice/local/data/knative")


def _copy_sources(dest: Path) -> Path:
    """The four packages' sources (no compiled extensions: they load interpreted), to break."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


def _replace(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(tree: Path) -> None:
        path = tree / DATA / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    return apply


def _delete(relative: str) -> Callable[[Path], None]:
    return lambda tree: (tree / DATA / relative).unlink()


BREAKAGES = {
    "missing CRD": (_delete("300-resources/revision.yaml"), "revision.yaml: No such file or directory"),
    "CRD not YAML": (_replace("300-resources/podautoscaler.yaml", "spec:", "spec: [\n"), "podautoscaler.yaml: "),
    "not a CRD": (
        _replace("300-resources/route.yaml", "kind: CustomResourceDefinition", "kind: Nope"),
        "route.yaml: not an apiextensions.k8s.io/v1 CustomResourceDefinition",
    ),
    "CRD refused": (
        _replace("300-resources/metric.yaml", "name: metrics.autoscaling.internal.knative.dev", "name: wrong"),
        'metric.yaml: metadata.name "wrong" must be spec.names.plural+"."+spec.group',
    ),
    "ConfigMap not YAML": (_replace("configmaps/network.yaml", "data:", "data: {\n"), "network.yaml: not valid YAML"),
    "NOTICE without the commit": (_replace("NOTICE", "knative/serving commit:", "commit:"), "NOTICE: no 'knative"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_package_data_stops_up_at_once_naming_the_file(tmp_path: Path, breakage: str) -> None:
    tree = _copy_sources(tmp_path / "src")
    damage, expected = BREAKAGES[breakage]
    damage(tree)
    run = Run(tmp_path / "run")
    env = run.env() | {"PYTHONPATH": str(tree)}
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", *run.up_args(), "--example", "autoscale"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("sluice local: error: cannot start: "), done.stderr
    assert str(tree / DATA) in lines[0] and expected in lines[0], lines[0]
    # Under a second on a quiet machine (~0.4 s here: interpreter start and imports); generous
    # for a loaded CI runner, far from the 30 s cache timeout it replaces.
    assert took < 3.0, f"took {took:.2f}s"
    assert not run.state()
    run.assert_clean()


def _up(run: Run, extra_env: dict[str, str]) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "sluice.local.cli", *run.up_args(), "--example", "autoscale"]
    return run.process(argv, run.env() | extra_env, run.root)


# The autoscaler refuses this value and exits; the supervisor restarts it with a back-off, and
# the activator never becomes ready (its websocket to the autoscaler never opens): a start-up
# with running processes that lasts several seconds and then fails.
BROKEN_AUTOSCALER = {"SLUICE_FORWARD_PORT": "not-a-port"}


def _wait_started_not_ready(run: Run, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = run.state()
        if state.get("processes") and not state.get("ready"):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no child process recorded within 30 s: {run.state()}")


@pytest.mark.slow
def test_ctrl_c_during_start_up_stops_everything(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with _up(run, BROKEN_AUTOSCALER) as proc:
        _wait_started_not_ready(run, proc)
        assert run.survivors(), "the activator and autoscaler should be running"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "interrupted during start-up" in err and "Traceback" not in err, err
    assert took < 15, f"stopping took {took:.1f}s"
    run.assert_clean()
    assert not (run.home / "state.json").exists()


@pytest.mark.slow
def test_a_failed_start_stops_everything_with_one_message(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with _up(run, BROKEN_AUTOSCALER) as proc:
        _wait_started_not_ready(run, proc)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    # The restarts are logged as they happen; the failure itself is one message.
    assert err.count("sluice local: error:") == 1 and "Traceback" not in err, err
    assert "sluice local: error: autoscaler keeps exiting" in err
    assert "SLUICE_FORWARD_PORT" in err  # the log tail says why
    run.assert_clean()


# ---- the components' command lines ----------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "prog", "variables"),
    [
        ("activator", "sluice-activator", ("POD_NAME", "SLUICE_KUBECONFIG", "SLUICE_DRAIN_SLEEP")),
        ("autoscaler", "sluice-autoscaler", ("POD_NAME", "SLUICE_STAT_SERVER_PORT", "KUBECONFIG")),
        ("proxy", "sluice-queue-proxy", ("SERVING_READINESS_PROBE", "USER_PORT", "CONTAINER_CONCURRENCY")),
    ],
)
def test_component_help_and_version(module: str, prog: str, variables: tuple[str, ...]) -> None:
    helped = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: {prog} [-h] [--version]")
    listed = helped.stdout.split("environment variables read:", 1)[1]
    assert all(v in listed for v in variables), helped.stdout
    version = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith(f"{prog} "), version
    bad = subprocess.run([sys.executable, "-m", module, "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_sluice_version_names_the_knative_release() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "--version"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    from sluice.local.data import knative_serving_commit

    assert done.stdout.startswith("sluice ") and knative_serving_commit()[:12] in done.stdout


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("activator", {"POD_NAME": "a", "POD_IP": "127.0.0.1"}, "no in-cluster configuration"),
        ("autoscaler", {"POD_NAME": "a", "POD_IP": "127.0.0.1", "SYSTEM_NAMESPACE": "knative-serving"}, "not found"),
        ("activator", {"POD_NAME": "a", "POD_IP": "127.0.0.1", "KUBECONFIG": "/nonexistent/kc"}, "/nonexistent/kc"),
    ],
)
def test_components_without_a_cluster_exit_with_one_log_line(
    tmp_path: Path, module: str, env: dict[str, str], expected: str
) -> None:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module], env=base | env, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["severity"] == "ERROR" and entry["logger"] == module, entry
    assert entry["message"].startswith("cannot configure the Kubernetes client: ") and expected in entry["message"]
