"""A kubernetes-asyncio `ApiClient`: from a kubeconfig file, or the pod's service account.

The same client code talks to a real kube-apiserver and to the embedded API of `sluice local`
(ARCHITECTURE.md: one code path to Kubernetes); only where the credentials come from differs.
kubernetes_asyncio is imported lazily, when a client is actually built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_KUBECONFIG", "NoClusterError", "api_client_from_env", "kubeconfig_from_env", "new_api_client"]

DEFAULT_KUBECONFIG = "~/.kube/config"  # kubectl's (and kubernetes-asyncio's) fallback


class NoClusterError(Exception):
    """Neither an in-cluster service account nor the kubeconfig file to use is there; the message
    says which was looked for (the components log it as their one line before exiting)."""


async def new_api_client(kubeconfig: str | Path | None, context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig file `kubeconfig` (`~` expanded), or, when it is None, from
    the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token).

    Close it with `await client.close()`."""
    # The submodules alone (sluice.kube.modules): in a cluster the kubeconfig loader and yaml stay out.
    from kubernetes_asyncio.client.api_client import ApiClient
    from kubernetes_asyncio.config.config_exception import ConfigException

    if kubeconfig is None:
        from kubernetes_asyncio.config.incluster_config import load_incluster_config

        try:
            load_incluster_config()  # type: ignore[no-untyped-call]  # untyped upstream
        except ConfigException as exc:
            raise NoClusterError(
                f"no in-cluster configuration ({exc}) and no kubeconfig given (set SLUICE_KUBECONFIG or KUBECONFIG)"
            ) from None
        return ApiClient()
    from kubernetes_asyncio.config.kube_config import new_client_from_config

    return await new_client_from_config(config_file=_existing(kubeconfig), context=context)


def _existing(kubeconfig: str | Path) -> str:
    """The kubeconfig path, `~` expanded, checked here: for a missing file the library logs a
    warning and then fails on the empty config it made up ("Expected key current-context"),
    which names neither the file nor the cause."""
    path = Path(kubeconfig).expanduser()
    if not path.is_file():
        raise NoClusterError(f"kubeconfig {kubeconfig} not found, and not in a cluster (KUBERNETES_SERVICE_HOST unset)")
    return str(path)


def kubeconfig_from_env(environ: Mapping[str, str]) -> str | None:
    """Which kubeconfig a component uses, None meaning in-cluster:

    `SLUICE_KUBECONFIG` when set and non-empty (it wins over in-cluster: `sluice local` and tests
    run components beside a real cluster's env); else in-cluster when `KUBERNETES_SERVICE_HOST` is
    set (a Knative pod); else `KUBECONFIG`; else ~/.kube/config."""
    explicit = environ.get("SLUICE_KUBECONFIG")
    if explicit:
        return explicit
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG


async def api_client_from_env(environ: Mapping[str, str]) -> Any:
    """`new_api_client(kubeconfig_from_env(environ))`."""
    return await new_api_client(kubeconfig_from_env(environ))
