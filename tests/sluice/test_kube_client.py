"""Where a component's Kubernetes credentials come from (`sluice.kube.client`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.kube import kubeconfig_from_env, new_api_client
from sluice.local.kubeapi import EmbeddedAPIServer

IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "~/.kube/config"),
        ({"KUBECONFIG": "/k"}, "/k"),
        ({"SLUICE_KUBECONFIG": "/s", "KUBECONFIG": "/k"}, "/s"),
        ({"SLUICE_KUBECONFIG": "", "KUBECONFIG": "/k"}, "/k"),  # empty is unset
        (IN_CLUSTER, None),
        (IN_CLUSTER | {"KUBECONFIG": "/k"}, None),  # a pod's KUBECONFIG does not beat in-cluster...
        (IN_CLUSTER | {"SLUICE_KUBECONFIG": "/s"}, "/s"),  # ...SLUICE_KUBECONFIG does
    ],
)
def test_kubeconfig_from_env(environ: dict[str, str], expected: str | None) -> None:
    assert kubeconfig_from_env(environ) == expected


async def test_new_api_client_from_a_kubeconfig(tmp_path: Path) -> None:
    async with EmbeddedAPIServer(port=0, crd_paths=[]) as server:
        api = await new_api_client(server.write_kubeconfig(tmp_path / "kc"))
        try:
            assert api.configuration.host == server.url
        finally:
            await api.close()


def test_importing_sluice_kube_loads_no_client_library() -> None:
    # The package is shared with code that must start fast; the libraries load on first use.
    import subprocess
    import sys

    # Of kubernetes_asyncio, only the package shells sluice.kube.modules defers and `exceptions`
    # (for ApiException) are loaded: no client, no configuration, no models.
    code = (
        "import sys, sluice.kube\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'kubernetes_asyncio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from sluice.kube.modules import DEFERRED

    assert out.stdout.strip() == str(sorted([*DEFERRED, "kubernetes_asyncio.client.exceptions"]))
