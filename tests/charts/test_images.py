"""images/Dockerfile, checked without a Docker engine: the rules of images/README.md on the parsed
Dockerfile (multi-stage, numeric non-root USER, ENTRYPOINT = the console script, no Kubernetes client in the
queue-proxy, no build tools in the final images, byte-compiled for a read-only root filesystem), plus the
install the Dockerfile performs (wheel -> venv) done offline in a temporary venv."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.charts.support import ROOT, run

DOCKERFILE = ROOT / "images" / "Dockerfile"
DOCKERIGNORE = ROOT / "images" / "Dockerfile.dockerignore"

# Final target -> console script (pyproject.toml [project.scripts]) and its entry point.
TARGETS = {
    "queue-proxy": ("sluice-queue-proxy", "proxy.__main__:main"),
    "activator": ("sluice-activator", "activator.__main__:main"),
    "autoscaler": ("sluice-autoscaler", "autoscaler.__main__:main"),
}
# What a final image must not contain or run: compilers, package managers installing things, dev headers.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|dnf|yum|microdnf|gcc|g\+\+|clang|cc|make|build-essential|python3?-dev|libc6?-dev)\b"
)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARGs and stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            current = Stage(m.group(2), m.group(1))
            assert current.name not in stages, f"duplicate stage {current.name}"
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            current.instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())


def chain(name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, final stage first."""
    out = [STAGES[name]]
    while out[-1].base in STAGES:
        out.append(STAGES[out[-1].base])
    return out


def copied_from(name: str) -> set[str]:
    return {m.group(1) for stage in chain(name) for a in stage.all("COPY") if (m := re.search(r"--from=(\S+)", a))}


def pip_installs(stage: Stage) -> list[str]:
    return [part for run_ in stage.all("RUN") for part in run_.split("&&") if re.search(r"\bpip\b.*\binstall\b", part)]


def test_multi_stage_with_the_three_targets() -> None:
    assert len(STAGES) >= 4
    assert set(TARGETS) <= set(STAGES)
    assert list(STAGES)[-3:] == list(TARGETS), "the final targets come last"


def test_base_image_is_one_pinned_python_slim() -> None:
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-[a-z]+(@sha256:[0-9a-f]{64})?", ARGS["PYTHON_IMAGE"])
    for stage in STAGES.values():
        assert stage.base in STAGES or stage.base == "${PYTHON_IMAGE}", stage.name


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_numeric_non_root_user(target: str) -> None:
    users = [u for stage in chain(target) for u in reversed(stage.all("USER"))]
    assert users, f"{target}: no USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[0])
    assert m, f"{target}: USER {users[0]} is not numeric (runAsNonRoot can only verify a numeric UID)"
    assert int(m.group(1)) != 0 and (m.group(2) is None or int(m.group(2)) != 0)
    assert STAGES[target].instructions[-2:][0][0] == "USER", "USER right before ENTRYPOINT in the final stage"


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_the_console_script(target: str) -> None:
    script, entry = TARGETS[target]
    (entrypoint,) = STAGES[target].all("ENTRYPOINT")
    assert json.loads(entrypoint) == [f"/opt/sluice/bin/{script}"], "exec form, no shell, the console script"
    assert not STAGES[target].all("CMD")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared.get(script) == entry, f"pyproject.toml [project.scripts] {script}"
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert installed.get(script) == entry, f"{script} not installed in the venv: rerun scripts/bootstrap"
    main = ROOT / entry.split(":")[0].replace(".", "/")
    main_py = main.with_suffix(".py")
    if main_py.is_file():  # the activator and autoscaler entry modules are being written
        assert re.search(r"^def main\(", main_py.read_text(), re.MULTILINE), f"{main_py} defines no main()"


def test_queue_proxy_installs_no_kubernetes_client() -> None:
    sources = copied_from("queue-proxy") - {"wheel"}
    assert sources == {"venv-base"}
    installs = pip_installs(STAGES["venv-base"])
    assert len(installs) == 1
    assert "knative_sluice-" in installs[0] and "[" not in installs[0], "no extras in the queue-proxy image"
    assert not re.search(r"kubernetes|aiohttp|yaml", installs[0], re.IGNORECASE)


@pytest.mark.parametrize("target", ["activator", "autoscaler"])
def test_control_images_install_the_k8s_extra(target: str) -> None:
    assert copied_from(target) == {"venv-k8s"}
    (install,) = pip_installs(STAGES["venv-k8s"])
    assert "[k8s]" in install


@pytest.mark.parametrize("target", TARGETS)
def test_no_build_tools_in_the_final_image(target: str) -> None:
    for stage in chain(target):
        for args in stage.all("RUN"):
            assert not BUILD_TOOLS.search(args), f"{stage.name}: {args}"
            assert not re.search(r"\bpip\b.*\binstall\b", args), f"{stage.name} installs packages"
    runtime_runs = " ".join(r for s in chain(target) for r in s.all("RUN"))
    assert re.search(r"pip uninstall .*\bpip\b", runtime_runs), "pip is removed from the final image"
    # Wheels only, so the install stages never need a compiler either.
    for name in ("venv-base", "venv-k8s"):
        assert all("--only-binary=:all:" in i for i in pip_installs(STAGES[name]))


@pytest.mark.parametrize("target", TARGETS)
def test_ready_for_a_read_only_root_filesystem(target: str) -> None:
    env = " ".join(e for s in chain(target) for e in s.all("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    runs = " ".join(r for s in chain(target) for r in s.all("RUN"))
    assert re.search(r"compileall .*--invalidation-mode unchecked-hash /usr/local/lib/python3\.11", runs)
    for source in copied_from(target):
        src_runs = " ".join(STAGES[source].all("RUN"))
        assert re.search(r"compileall .*--invalidation-mode unchecked-hash /opt/sluice", src_runs), source
        assert "--no-compile" in src_runs  # compiled once, hash-based: valid whatever the file times


def test_build_context_holds_every_packaged_module() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    copies = {src for a in STAGES["wheel"].all("COPY") for src in shlex.split(a)[:-1] if not src.startswith("--")}
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for needed in [*packages, "pyproject.toml", "README.md"]:
        assert needed in copies, f"{needed} not copied into the build"
        assert needed in allowed, f"{needed} filtered out by {DOCKERIGNORE.name}"


def test_the_dockerfile_install_yields_the_console_scripts(tmp_path: Path) -> None:
    """What the venv stages do, offline: build the wheel, install it into a fresh venv without pip (no
    dependencies: they are not in the wheel), and find the three console scripts wired to that venv."""
    try:
        import hatchling  # noqa: F401
    except ImportError:
        pytest.skip("hatchling is not in the venv, so the wheel cannot be built offline")
    py = sys.executable
    build = run(
        [py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path, ROOT]
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("knative_sluice-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    install = run(
        [
            py,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-compile",
            wheel,
        ]
    )
    assert install.returncode == 0, install.stderr
    for script, entry in TARGETS.values():
        path = venv / "bin" / script
        assert path.is_file(), script
        text = path.read_text()
        assert text.startswith(f"#!{venv}/bin/python"), text.splitlines()[0]
        module, func = entry.split(":")
        assert f"from {module} import {func}" in text
