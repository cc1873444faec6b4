"""System-internal TLS for the activator (CONTRACT.md §3.1, §3.2, §3.7).

With `config-network` `system-internal-tls: Enabled`:
- §3.1: the activator watches Secret `routing-serving-certs` (`tls.crt`, `tls.key`, `ca.crt`)
  and the ConfigMaps labelled `networking.knative.dev/trust-bundle` in the system namespace;
- §3.2: it serves its handler over TLS on 8112 with the secret's certificate. The listening
  context only dispatches: its SNI callback (run for every handshake, with or without SNI)
  hands the connection the context built from the newest secret, so a rotated certificate
  is served to new connections while open ones keep theirs;
- §3.7: it reaches queue-proxies over HTTPS (`<podIP>:8112`, ClusterIP `<clusterIP>:443`),
  TLS ≥ 1.3, SNI `data-plane.knative.dev`, roots = the secret's `ca.crt` plus every PEM
  bundle of the trust-bundle ConfigMaps, chain + hostname verification against
  `data-plane.knative.dev`, and the leaf must carry DNS SAN `kn-user-<namespace>`: a
  connection without it is closed and fails like a refused dial (502 / probe failure).

The client side lives in pool subclasses (`TLSUpstreamPool`, and `TLSH2UpstreamPool` in
`tls_h2.py`, which loads h2 only when a revision speaks HTTP/2) so the engine's pools need no
TLS knowledge: they dial with `server_hostname` and check the SAN right after the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import ssl
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from sluice.http.client import (
    DialError,
    DialPolicy,
    UpstreamConnection,
    UpstreamPool,
    UpstreamSource,
)

__all__ = [
    "CLUSTER_IP_TLS_PORT",
    "DATA_PLANE_NAME",
    "POD_TLS_PORT",
    "SECRET_NAME",
    "TRUST_BUNDLE_LABEL",
    "PeerVerificationError",
    "TLSMaterial",
    "TLSUpstreamPool",
    "parse_tls_version",
    "peer_san_problem",
    "user_san",
]

log = logging.getLogger("activator.tls")

SECRET_NAME = "routing-serving-certs"  # §3.1
TRUST_BUNDLE_LABEL = "networking.knative.dev/trust-bundle"  # §3.1
DATA_PLANE_NAME = "data-plane.knative.dev"  # §3.7 SNI / verified host name
POD_TLS_PORT = 8112  # §3.7 pod mode
CLUSTER_IP_TLS_PORT = 443  # §3.7 ClusterIP mode

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

T = TypeVar("T", bound=asyncio.BaseProtocol)


def parse_tls_version(value: str) -> ssl.TLSVersion | None:
    """`1.2` / `1.3` (the queue-proxy's env format, §3.1); "" = not set; else ValueError."""
    if not value:
        return None
    try:
        return _VERSIONS[value]
    except KeyError:
        raise ValueError(f"{value!r} is not one of '', '1.2', '1.3'") from None


def user_san(namespace: str) -> str:
    """§3.7: the DNS SAN the controller puts on a namespace's `serving-certs`."""
    return f"kn-user-{namespace.lower()}"


def peer_san_problem(transport: asyncio.BaseTransport, namespace: str) -> str | None:
    """None if the verified leaf certificate names `kn-user-<namespace>` (§3.7), else why not."""
    cert = transport.get_extra_info("peercert")
    want = user_san(namespace)
    if not isinstance(cert, dict):
        return "tls: no verified peer certificate"
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    if want in names:
        return None
    return f"tls: certificate is not valid for {want}, valid for {', '.join(names) or 'no DNS names'}"


class PeerVerificationError(ConnectionError):
    """The queue-proxy's certificate lacks the namespace SAN (§3.7)."""


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` takes paths only; the activator's root filesystem is read-only, so
    the PEM goes through an anonymous memory file (a private temp file where there is none)."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fds = [memfd_create("tls.crt"), memfd_create("tls.key")]
        try:
            for fd, data in zip(fds, (cert, key), strict=True):
                os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
            return
        except FileNotFoundError:  # no /proc: fall through
            pass
        finally:
            for fd in fds:
                os.close(fd)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")]
        for path, data in zip(paths, (cert, key), strict=True):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(data)
        ctx.load_cert_chain(paths[0], paths[1])


def _secret_value(obj: dict[str, Any], key: str) -> bytes:
    data = obj.get("data") or {}
    value = data.get(key)
    if isinstance(value, str) and value:
        return base64.b64decode(value)
    string_data = obj.get("stringData") or {}
    value = string_data.get(key)
    return value.encode() if isinstance(value, str) else b""


class TLSMaterial:
    """The secret and the trust bundles, and the SSL contexts built from them.

    Informer handlers (`secret_event`, `bundle_event`) rebuild the contexts; the server
    side swaps per handshake (module docstring), the client side is read at each dial."""

    def __init__(
        self,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
        secret_name: str = SECRET_NAME,
    ) -> None:
        self.secret_name = secret_name
        # §3.2: TLS 1.3 minimum by default, overridable like the queue-proxy's (§2.3).
        self.min_version = min_version or ssl.TLSVersion.TLSv1_3
        self.max_version = max_version
        self.cert = b""
        self.key = b""
        self.ca = b""
        self.bundles: dict[tuple[str, str], bytes] = {}
        self.server_context: ssl.SSLContext | None = None  # from the newest valid secret
        self.client_http1: ssl.SSLContext = self._client_context(["http/1.1"])
        self.client_h2: ssl.SSLContext = self._client_context(["h2"])
        self.listening = self._listening_context()
        self.generation = 0  # bumped when the roots change
        self.on_roots_changed: Callable[[], None] | None = None

    # ---- server (§3.2) ---------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        if self.max_version is not None:
            ctx.maximum_version = self.max_version
        # h2 hook: HTTP/2 over TLS by ALPN, as Go's TLS server offers it.
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx

    def _listening_context(self) -> ssl.SSLContext:
        ctx = self._server_context()

        def pick(ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int | None:
            current = self.server_context
            if current is None:
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # no certificate yet
            ssl_object.context = current
            return None

        ctx.sni_callback = pick
        return ctx

    # ---- client (§3.7) ---------------------------------------------------------------

    def roots_pem(self) -> str:
        parts = [self.ca] + [self.bundles[k] for k in sorted(self.bundles)]
        return "\n".join(p.decode("latin-1").strip() for p in parts if p.strip())

    def _client_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # §3.7: always ≥ 1.3 towards pods
        ctx.set_alpn_protocols(alpn)
        roots = self.roots_pem()
        if roots:
            try:
                ctx.load_verify_locations(cadata=roots)
            except ssl.SSLError as exc:
                log.warning("ignoring unparsable trust roots: %s", exc)
        return ctx

    def _rebuild_clients(self) -> None:
        self.client_http1 = self._client_context(["http/1.1"])
        self.client_h2 = self._client_context(["h2"])
        self.generation += 1
        if self.on_roots_changed is not None:
            self.on_roots_changed()

    # ---- informer events (§3.1) ----------------------------------------------------------

    def secret_event(self, kind: str, obj: dict[str, Any]) -> None:
        if str((obj.get("metadata") or {}).get("name", "")) != self.secret_name:
            return
        if kind == "DELETED":
            cert, key, ca = b"", b"", b""
        else:
            try:
                cert, key, ca = (_secret_value(obj, k) for k in ("tls.crt", "tls.key", "ca.crt"))
            except ValueError as exc:
                log.warning("secret %s: bad data: %s", self.secret_name, exc)
                return
        if (cert, key) != (self.cert, self.key):
            self.cert, self.key = cert, key
            if cert and key:
                ctx = self._server_context()
                try:
                    _load_cert_chain(ctx, cert, key)
                except (ssl.SSLError, OSError) as exc:
                    # Keep serving the previous certificate (Go keeps its last good one).
                    log.warning("secret %s: cannot load tls.crt/tls.key: %s", self.secret_name, exc)
                else:
                    self.server_context = ctx
                    log.info("serving certificate loaded from secret %s", self.secret_name)
        if ca != self.ca:
            self.ca = ca
            self._rebuild_clients()

    def bundle_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "DELETED" or TRUST_BUNDLE_LABEL not in (meta.get("labels") or {}):
            changed = self.bundles.pop(key, None) is not None
        else:
            # Every value of the ConfigMap is a PEM bundle (Go appends each).
            data = obj.get("data") or {}
            pem = b"\n".join(str(data[k]).encode("latin-1") for k in sorted(data) if "-----BEGIN" in str(data[k]))
            changed = self.bundles.get(key) != pem
            self.bundles[key] = pem
        if changed:
            self._rebuild_clients()


# ---- upstream pools (§3.7) -------------------------------------------------------------------


async def _dial_tls(
    host: str, port: int, dial: DialPolicy, factory: Callable[[], T], ctx: ssl.SSLContext
) -> tuple[asyncio.BaseTransport, T]:
    """The engine's dial retry (§2.6 DialPolicy) with SNI `data-plane.knative.dev`; a failed
    handshake (ssl.SSLError is an OSError) fails at once, like a refused connection."""
    loop = asyncio.get_running_loop()
    last_exc: BaseException | None = None
    for timeout in dial.attempt_timeouts():
        try:
            return await asyncio.wait_for(
                loop.create_connection(factory, host, port, ssl=ctx, server_hostname=DATA_PLANE_NAME),
                timeout,
            )
        except TimeoutError as exc:
            last_exc = exc
            await asyncio.sleep(dial.sleep * (0.5 + random.random()))
            continue
        except ssl.SSLCertVerificationError as exc:
            raise PeerVerificationError(f"tls: failed to verify certificate: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise PeerVerificationError(f"tls: handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise DialError(host, port, exc) from exc
    raise DialError(host, port, last_exc or TimeoutError())


class TLSUpstreamPool(UpstreamPool):
    """An `UpstreamPool` to a queue-proxy's TLS port, verifying the namespace SAN (§3.7)."""

    def __init__(self, host: str, port: int, max_idle: int, material: TLSMaterial, namespace: str) -> None:
        super().__init__(host, port, max_idle, ssl=material.client_http1)
        self.material = material
        self.namespace = namespace

    async def connect(self) -> UpstreamConnection:
        transport, conn = await _dial_tls(
            self.host, self.port, self.dial, lambda: UpstreamConnection(self), self.material.client_http1
        )
        self.open_connections += 1  # connection_lost decrements it, also after a refusal below
        problem = peer_san_problem(transport, self.namespace)
        if problem is not None:
            conn.close()
            raise PeerVerificationError(problem)
        return conn

    def _new_h2c_pool(self) -> UpstreamSource:
        """HTTP/2 requests: h2 over TLS (ALPN `h2`) with the same checks (§3.7 Protocol)."""
        from .tls_h2 import TLSH2UpstreamPool  # h2 (1.4 MB) only for HTTP/2 revisions (issue 19)

        return TLSH2UpstreamPool(self.host, self.port, self.dial, self.material, self.namespace)
