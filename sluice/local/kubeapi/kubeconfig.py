"""kubeconfig for the embedded server, and a kubernetes-asyncio client built from one."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "sluice-local"


def kubeconfig_dict(
    server: str, token: str, namespace: str = "default", ca_cert: bytes | None = None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_cert:
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
    path: str | Path, server: str, token: str, namespace: str = "default", ca_cert: bytes | None = None
) -> Path:
    """Write atomically with mode 0600: the file holds the bearer token."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig_dict(server, token, namespace, ca_cert), f, sort_keys=False)
    os.replace(tmp, p)
    return p


async def kube_client_from_kubeconfig(path: str | Path, context: str | None = None) -> Any:
    """A kubernetes_asyncio.client.ApiClient configured from `path` (close it with `await c.close()`).

    Works for any kubeconfig, this server's or a real cluster's: nothing here is specific to the
    embedded server, which is the point (it is the shared loader of sluice/kube)."""
    from sluice.kube.client import new_api_client

    return await new_api_client(str(path), context)
