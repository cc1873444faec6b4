"""The activator and the autoscaler load only the parts of their libraries they use (issue 19:
"nothing the default path does not use is imported"; bench/component_cost.py measures the cost).

Each component runs its Kubernetes start-up path in a fresh interpreter: the API client from a
kubeconfig, the ConfigMap reads, and one list of every informer, against a stand-in API server
that answers every request with an empty list. Then sys.modules must hold none of
kubernetes_asyncio's generated models, the API classes it does not call, the dynamic client
(kubernetes_validate, jsonschema), h2 (only for HTTP/2 connections and revisions), and, with
metrics and tracing off, no OpenTelemetry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SERVER = """
import asyncio, json, sys
BODY = b'{"kind":"List","metadata":{"resourceVersion":"1"},"items":[],"data":{}}'

async def handle(reader, writer):
    while (await reader.readline()).strip():
        pass  # the request head; GETs have no body
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
                 b"Content-Length: %d\\r\\n\\r\\n" % len(BODY) + BODY)
    await writer.drain()
    writer.close()

async def with_api(kubeconfig, body):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                   "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                   "users": [{"name": "u", "user": {"token": "t"}}],
                   "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}, f)
    try:
        await body()
    finally:
        server.close()
"""

_ACTIVATOR = """
async def body():
    from activator.__main__ import ActivatorProcess, _read_configmaps
    from activator.config import ActivatorConfig
    from activator.kube import make_api_client

    cfg = ActivatorConfig.from_env({"POD_NAME": "a", "POD_IP": "127.0.0.1", "SLUICE_KUBECONFIG": KUBECONFIG})
    client = await make_api_client(cfg.kubeconfig)
    network, observability, _ = await _read_configmaps(cfg, client)
    proc = ActivatorProcess(cfg, client, network, observability)
    for informer in proc._make_informers():
        await informer._list()
    await client.close()
"""

_AUTOSCALER = """
async def body():
    from autoscaler.app import AutoscalerApp, Options
    from autoscaler.kube import load_api_client

    client = await load_api_client({"SLUICE_KUBECONFIG": KUBECONFIG})
    app = AutoscalerApp(client, Options())
    await app._read_network_config()
    for informer in (app.cm_informer, app.pa_informer, app.sks_informer, app.metric_informer, app.pod_informer):
        await informer._list()
    await client.close()
"""

_REPORT = """
asyncio.run(with_api(KUBECONFIG, body))
print(json.dumps(sorted(sys.modules)))
"""

# kubernetes_asyncio's generated API modules each component uses; any other one means a package
# __init__ ran or a call bypassed sluice.kube.rest.
_APIS = {
    "activator": set(),  # sluice.kube.rest has its calls
    "autoscaler": {"coordination_v1_api", "discovery_v1_api"},  # leases and the bucket EndpointSlices
}


def _loaded(component: str, tmp_path: Path) -> list[str]:
    body = _ACTIVATOR if component == "activator" else _AUTOSCALER
    code = f"KUBECONFIG = {str(tmp_path / 'kubeconfig')!r}\n" + _SERVER + body + _REPORT
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin"}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    modules: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return modules


@pytest.mark.parametrize("component", ["activator", "autoscaler"])
def test_control_plane_loads_no_generated_models(component: str, tmp_path: Path) -> None:
    modules = _loaded(component, tmp_path)
    assert "kubernetes_asyncio.client.api_client" in modules  # the path under test did run
    models = [m for m in modules if m.startswith("kubernetes_asyncio.client.models.")]
    assert not models, f"{component} loads {len(models)} generated models, e.g. {models[:3]}"
    apis = {m.rpartition(".")[2] for m in modules if m.startswith("kubernetes_asyncio.client.api.")}
    unused = sorted(apis - _APIS[component])
    assert not unused, f"{component} loads API classes it does not call: {unused}"
    heavy = [
        m
        for m in modules
        if m.split(".")[0] in ("kubernetes_validate", "jsonschema", "opentelemetry", "h2", "hpack")
        or m.startswith(("kubernetes_asyncio.dynamic", "kubernetes_asyncio.stream", "kubernetes_asyncio.watch"))
    ]
    assert not heavy, f"{component} loads {heavy}"


def test_deferred_packages_still_offer_everything() -> None:
    # Code written against the whole package keeps working after sluice.kube deferred it: a model, an
    # API class, a name only the full __init__ defines, a function of config/__init__, a subpackage.
    code = (
        "import sys, sluice.kube\n"
        "from kubernetes_asyncio import client, config\n"
        "from kubernetes_asyncio.client import V1ObjectMeta\n"
        "import kubernetes_asyncio.watch\n"
        "assert 'kubernetes_asyncio.client.models.v1_pod' not in sys.modules\n"
        "assert client.V1Pod.__name__ == 'V1Pod' and client.CoreV1Api.__name__ == 'CoreV1Api'\n"
        "assert client.__version__ and callable(config.load_config) and V1ObjectMeta(name='x').name == 'x'\n"
        "try:\n"
        "    client.NoSuchThing\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
