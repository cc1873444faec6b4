"""images/Dockerfile and its lock files, checked without a container engine: the rules of images/README.md on
the parsed Dockerfile (multi-stage, final stages FROM scratch, numeric non-root USER, ENTRYPOINT = the console
script, no Kubernetes client in the queue-proxy, every pip install hash-locked, the base pinned by digest).
images/test (run by scripts/test where podman can run) builds the images for real and runs them."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement

from tests.charts.support import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"
DOCKERIGNORE = ROOT / "images" / "Dockerfile.dockerignore"

# Final target -> console script (pyproject.toml [project.scripts]) and its entry point.
TARGETS = {
    "queue-proxy": ("sluice-queue-proxy", "proxy.__main__:main"),
    "activator": ("sluice-activator", "activator.__main__:main"),
    "autoscaler": ("sluice-autoscaler", "autoscaler.__main__:main"),
}
LOCKS = {name: ROOT / "images" / f"requirements-{name}.txt" for name in ("tools", "base", "k8s")}


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


def test_builder_base_is_the_official_python_image_pinned_by_digest() -> None:
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-[a-z]+@sha256:[0-9a-f]{64}", ARGS["PYTHON_IMAGE"])
    for stage in STAGES.values():
        assert stage.base in STAGES or stage.base in ("${PYTHON_IMAGE}", "scratch"), stage.name


@pytest.mark.parametrize("target", TARGETS)
def test_final_images_start_from_scratch_with_no_run_step(target: str) -> None:
    """No shell in the image, so no RUN can follow: the root filesystem is assembled in a builder stage."""
    assert chain(target)[-1].base == "scratch"
    for stage in chain(target):
        assert not stage.all("RUN"), f"{stage.name} runs a command"


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


def locked(name: str) -> dict[str, str]:
    """name -> version of a lock file, after checking every requirement is pinned with hashes."""
    out = {}
    for block in re.split(r"\n(?=[a-z0-9])", LOCKS[name].read_text(), flags=re.IGNORECASE):
        block = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#")).strip()
        if not block:
            continue
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        assert m, f"{LOCKS[name].name}: not pinned: {block.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{LOCKS[name].name}: {m.group(1)} has no hash"
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_queue_proxy_installs_no_kubernetes_client() -> None:
    assert copied_from("queue-proxy") == {"rootfs", "venv-base"}
    base = locked("base")
    assert {"httptools", "uvloop", "h2"} <= set(base)
    assert not {"kubernetes-asyncio", "aiohttp", "pyyaml"} & set(base), "no extras in the queue-proxy image"
    assert "requirements-base.txt" in " ".join(STAGES["venv-base"].all("RUN"))


@pytest.mark.parametrize("target", ["activator", "autoscaler"])
def test_control_images_install_the_k8s_extra(target: str) -> None:
    assert copied_from(target) == {"rootfs", "venv-k8s"}
    assert {"kubernetes-asyncio", "aiohttp", "pyyaml"} <= set(locked("k8s"))
    assert "requirements-k8s.txt" in " ".join(STAGES["venv-k8s"].all("RUN"))


def test_every_pip_install_is_hash_locked_or_our_own_wheel() -> None:
    venv_script = (ROOT / "images" / "venv.sh").read_text().splitlines()
    installs = [part for stage in STAGES.values() for part in pip_installs(stage)]
    installs += [line for line in venv_script if re.search(r"\bpip\b.*\binstall\b", line)]
    assert len(installs) == 3, installs  # the tools, a venv's locked dependencies, our wheel
    for part in installs:
        if "knative_sluice-" in part:
            assert "--no-index" in part and "--no-deps" in part, part
        else:
            assert re.search(r"--require-hashes .*-r (/build/requirements-\w+\.txt|\"\$lock\")", part), part
            assert "--only-binary=:all:" in part, "wheels only: no build step, no compiler"
    for name in ("base", "k8s"):
        assert any(f"venv.sh /build/requirements-{name}.txt" in r for r in STAGES[f"venv-{name}"].all("RUN"))


def test_the_tools_lock_satisfies_the_build_requirements() -> None:
    """The wheel is built without isolation from the locked tools (imagetool.py check-build-requires does
    the same in the build): a [build-system] change needs `images/lock`."""
    tools = locked("tools")
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in tools, f"{spec} is not in requirements-tools.txt: run images/lock"
        assert req.specifier.contains(tools[name], prereleases=True), f"{spec}: locked {tools[name]}"
    assert "cyclonedx-bom" in tools


def test_build_context_holds_every_packaged_module() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    copies = {src for a in STAGES["wheel"].all("COPY") for src in shlex.split(a)[:-1] if not src.startswith("--")}
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for needed in [*packages, "pyproject.toml", "README.md"]:
        assert needed in copies, f"{needed} not copied into the build"
        assert needed in allowed, f"{needed} filtered out by {DOCKERIGNORE.name}"
