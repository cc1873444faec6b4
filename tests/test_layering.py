"""Rules of the house (ARCHITECTURE.md): component packages never import each other,
`sluice` imports none of them, and the queue-proxy entry point stays free of the heavy
libraries (its start-up time and memory are paid in every revision pod)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("proxy", "activator", "autoscaler")


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _package_imports(package: str) -> dict[Path, set[str]]:
    base = ROOT / package
    return {p: _imported_top_levels(p) for p in base.rglob("*.py")} if base.is_dir() else {}


def test_components_do_not_import_each_other() -> None:
    for component in COMPONENTS:
        for path, names in _package_imports(component).items():
            forbidden = names & (set(COMPONENTS) - {component})
            assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_shared_core_imports_no_component() -> None:
    for path, names in _package_imports("sluice").items():
        forbidden = names & set(COMPONENTS)
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_layering_walk_sees_real_files() -> None:
    # Guards the two tests above against passing vacuously.
    assert len(_package_imports("sluice")) > 3
    assert len(_package_imports("proxy")) > 1


def test_queue_proxy_entry_point_stays_light() -> None:
    code = (
        "import sys, proxy.__main__\n"
        "heavy = [m for m in ('aiohttp', 'kubernetes_asyncio', 'yaml') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"proxy.__main__ loads {out.stdout.strip()}"


# Modules the default queue-proxy (no TLS files, no request log, no metrics, TCP readiness) does not
# use: each costs start-up time and RSS in every revision pod (issue 19, bench/pod_cost.py).
_NOT_ON_THE_DEFAULT_PATH = (
    "email",
    "decimal",
    "ipaddress",
    "urllib.parse",
    "pathlib",
    "h2",
    "hpack",
    "proxy.requestlog",
    "proxy.prometheus",
    "proxy.observer",
)


def test_default_queue_proxy_loads_only_what_it_uses() -> None:
    code = (
        "import asyncio, os, sys\n"
        "from proxy.__main__ import QueueProxyProcess\n"
        "from proxy.config import QueueProxyConfig\n"
        "from proxy.observability import ObservabilityConfig\n"
        "from proxy.readiness import ReadinessProber, parse_readiness_probes\n"
        "async def main():\n"
        "    cfg = QueueProxyConfig.from_env(os.environ)\n"
        "    probes = parse_readiness_probes(cfg.serving_readiness_probe, False)\n"
        "    proc = QueueProxyProcess(cfg, ReadinessProber(probes), ObservabilityConfig.from_json(''))\n"
        "    await proc.start()\n"
        "    await proc.close()\n"
        "from sluice import aio\n"
        "aio.run(main())\n"
        f"print(','.join(m for m in {_NOT_ON_THE_DEFAULT_PATH!r} if m in sys.modules))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "c",
        "SERVING_REVISION": "r",
        "SERVING_POD": "p",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": "0",
        "QUEUE_SERVING_TLS_PORT": "0",
        "SLUICE_ADMIN_PORT": "0",
        "SLUICE_METRICS_PORT": "0",
        "SLUICE_BIND_HOST": "127.0.0.1",
        "USER_PORT": "1",
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_READINESS_PROBE": '{"tcpSocket":{"port":1,"host":"127.0.0.1"},"successThreshold":1}',
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SLUICE_CERT_DIR": str(ROOT / "no-such-dir"),
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the default queue-proxy loads {out.stdout.strip()}"
