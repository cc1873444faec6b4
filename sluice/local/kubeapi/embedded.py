"""`EmbeddedAPIServer`: the in-process API (start/stop, url, token, kubeconfig)."""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from .crd import load_crd_files
from .fields import AdmissionHook
from .kubeconfig import write_kubeconfig
from .logs import PodLogSource
from .meta import random_token
from .ops import Operations
from .persistence import SQLiteBackend
from .resources import Registry, default_registry
from .server import KubeAPIApp
from .store import Store
from .tls import ensure_self_signed, server_context

log = logging.getLogger("sluice.kubeapi")

# Namespaces every cluster starts with.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def default_crd_dir() -> Path:
    """The directory of the Knative CRDs shipped in the package (sluice/local/data)."""
    from ..data import CRD_FILES

    return CRD_FILES[0].parent


class EmbeddedAPIServer:
    """An embedded Kubernetes API server speaking the REST subset Sluice needs.

    `crd_paths=None` loads the Knative CRDs shipped in the package; pass `[]` for none. A CRD
    that cannot be loaded raises `CRDError` naming the file.
    `history_size` bounds the watch history (older resourceVersions get 410 Gone).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        crd_paths: Sequence[str | Path] | None = None,
        token: str | None = None,
        history_size: int = 10_000,
        bookmark_interval: float = 60.0,
        tls: bool = True,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if crd_paths is None:
            from ..data import CRD_FILES

            crd_paths = CRD_FILES
        self.registry: Registry = default_registry()
        for t in load_crd_files(crd_paths):
            self.registry.add(t)
        self.token = token or self._load_or_make_token()
        self._history_size = history_size
        self._bookmark_interval = bookmark_interval
        self.tls = tls
        self._tls_files = (Path(tls_cert), Path(tls_key)) if tls_cert and tls_key else None
        self._tmpdir: str | None = None
        self._runner: web.AppRunner | None = None
        self._app: KubeAPIApp | None = None
        self.store: Store | None = None
        self.ops: Operations | None = None
        self._admission: dict[tuple[str, str], tuple[str, AdmissionHook]] = {}
        # Where the pod `log` subresource reads from (the kubelet's side; None: logs are NotFound).
        self.pod_logs: PodLogSource | None = None

    def add_admission(self, group: str, plural: str, webhook: str, hook: AdmissionHook) -> None:
        """A validating admission webhook for one resource (creates and updates of the object)."""
        self._admission[(group, plural)] = (webhook, hook)
        if self.ops is not None:
            self.ops.admission[(group, plural)] = (webhook, hook)

    def _load_or_make_token(self) -> str:
        if self.data_dir is None:
            return random_token()
        # A restart keeps the token so kubeconfigs already handed out keep working.
        path = self.data_dir / "token"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tok = random_token()
        path.touch(mode=0o600)
        path.write_text(tok)
        return tok

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self._port}"

    @property
    def ca_cert(self) -> bytes | None:
        """PEM of the serving certificate (self-signed: it is its own CA), or None without TLS."""
        return self._tls_files[0].read_bytes() if self.tls and self._tls_files else None

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        if self._tls_files is None:
            if self.data_dir is not None:
                directory = self.data_dir
            else:
                self._tmpdir = tempfile.mkdtemp(prefix="sluice-kubeapi-")
                directory = Path(self._tmpdir)
            self._tls_files = ensure_self_signed(directory, self.host)
        return server_context(*self._tls_files)

    async def start(self) -> None:
        backend = SQLiteBackend(self.data_dir) if self.data_dir is not None else None
        self.store = Store(backend, history_size=self._history_size)
        self.ops = Operations(self.registry, self.store)
        self.ops.admission.update(self._admission)
        self._ensure_namespaces(INITIAL_NAMESPACES)
        self.ops.gc.scan()
        self._app = KubeAPIApp(
            self.ops, self.token, bookmark_interval=self._bookmark_interval, pod_logs=lambda: self.pod_logs
        )
        self._runner = web.AppRunner(self._app.build(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._ssl_context())
        await site.start()
        server = getattr(site, "_server", None)
        sockets: Iterable[Any] = getattr(server, "sockets", None) or ()
        for sock in sockets:
            self._port = sock.getsockname()[1]
            break
        self._app.server_address = f"{self.host}:{self._port}"
        log.info("embedded API server listening on %s", self.url)

    def _ensure_namespaces(self, names: Iterable[str]) -> None:
        assert self.ops is not None and self.store is not None
        ns_type = self.registry.lookup("", "v1", "namespaces")
        for name in names:
            if self.store.get(ns_type.group_resource, "", name) is None:
                self.ops.create(ns_type, "", {"metadata": {"name": name}})

    async def stop(self) -> None:
        if self._app is not None:
            self._app.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._tls_files = None

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Names the certificate file (valid while the server runs) rather than inlining it, so
        clients make no temporary copy of it (see kubeconfig_dict)."""
        ca_file = self._tls_files[0] if self.tls and self._tls_files else None
        return write_kubeconfig(path, self.url, self.token, namespace, ca_file=ca_file)

    async def __aenter__(self) -> EmbeddedAPIServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
