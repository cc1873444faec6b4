"""kubeconfig for the embedded server, and a kubernetes-asyncio client built from one."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "sluice-local"


def kubeconfig_dict(
    server: str, token: str, namespace: str = "default", ca_cert: bytes | None = None, ca_file: Path | None = None
) -> dict[str, Any]:
    """`ca_file` (a path) wins over `ca_cert` (inline PEM): with inline data kubernetes-asyncio
    writes the certificate to a temporary file in every process that loads the kubeconfig and
    removes it only at a normal interpreter exit, so killed processes leave them behind."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file.resolve())
    elif ca_cert:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(
    path: str | Path,
    server: str,
    token: str,
    namespace: str = "default",
    ca_cert: bytes | None = None,
    ca_file: Path | None = None,
) -> Path:
    """Write atomically with mode 0600: the file holds the bearer token."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig_dict(server, token, namespace, ca_cert, ca_file), f, sort_keys=False)
    os.replace(tmp, p)
    return p


async def kube_client_from_kubeconfig(path: str | Path, context: str | None = None) -> Any:
    """A kubernetes_asyncio.client.ApiClient configured from `path` (close it with `await c.close()`).

    Works for any kubeconfig, this server's or a real cluster's: nothing here is specific to the
    embedded server, which is the point (it is the shared loader of sluice/kube)."""
    from sluice.kube.client import new_api_client

    return await new_api_client(str(path), context)
