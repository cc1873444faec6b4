"""System-internal TLS (CONTRACT.md §3.1, §3.2, §3.7): the activator serves its handler on the
TLS port with the certificate of Secret `routing-serving-certs` (rotated on change), and
reaches real queue-proxies over TLS, verifying the chain against the secret's `ca.crt` plus
the trust-bundle ConfigMaps, the name `data-plane.knative.dev` and the SAN `kn-user-<ns>`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from activator.__main__ import ActivatorProcess
from activator.config import NetworkConfig
from activator.probe import probe_queue_proxy
from activator.tls import DATA_PLANE_NAME, SECRET_NAME, TRUST_BUNDLE_LABEL, TLSUpstreamPool
from activator.tls_h2 import TLSH2UpstreamPool
from sluice.http.client import UpstreamPool
from tests.h2.h2util import H2Client, UpstreamRequest, h2_upstream
from tests.support import ROOT, QueueProxySubprocess, RawConnection, free_port, get, raw_upstream, read_request_head

from .conftest import Kube, MakeActivator, eventually

REV = "hello-00001"
KEY = ("default", REV)
ROUTED = {"Knative-Serving-Revision": REV, "Knative-Serving-Namespace": "default"}
SYSTEM_NS = "knative-serving"
TLS_ON = NetworkConfig(system_internal_tls=True)


# ---- certificates (openssl) ------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, sans: list[str]) -> Path:
    """`<d>/<name>/tls.crt`, `tls.key` signed by `ca`, for the DNS names `sans`."""
    out = d / name
    out.mkdir()
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=" + ",".join(f"DNS:{n}" for n in sans) + "\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}/tls.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}/tls.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip
    return out


@dataclass(frozen=True)
class Certs:
    root: Path

    def pem(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def dir(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    d = tmp_path_factory.mktemp("certs")
    _make_ca(d, "ca")
    _make_ca(d, "ca2")
    # The controller-issued serving-certs carry both names (§3.7).
    _make_leaf(d, "pod", "ca", [DATA_PLANE_NAME, "kn-user-default"])
    _make_leaf(d, "pod-other-ns", "ca", [DATA_PLANE_NAME, "kn-user-other"])
    _make_leaf(d, "pod-ca2", "ca2", [DATA_PLANE_NAME, "kn-user-default"])
    _make_leaf(d, "activator", "ca", [DATA_PLANE_NAME])
    _make_leaf(d, "activator-rotated", "ca", [DATA_PLANE_NAME])
    yield Certs(d)


# ---- helpers --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def put_secret(kube: Kube, certs: Certs, leaf: str = "activator") -> None:
    body = {
        "metadata": {"name": SECRET_NAME, "namespace": SYSTEM_NS},
        "data": {
            "tls.crt": _b64(certs.pem(f"{leaf}/tls.crt")),
            "tls.key": _b64(certs.pem(f"{leaf}/tls.key")),
            "ca.crt": _b64(certs.pem("ca.crt")),
        },
    }
    with contextlib.suppress(Exception):
        await kube.core.create_namespace({"metadata": {"name": SYSTEM_NS}})
    try:
        await kube.core.create_namespaced_secret(SYSTEM_NS, body)
    except Exception:
        await kube.core.replace_namespaced_secret(SECRET_NAME, SYSTEM_NS, body)


def client_context(certs: Certs, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=certs.pem("ca.crt").decode())
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def tls_open(port: int, certs: Certs, alpn: list[str] | None = None) -> RawConnection:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(certs, alpn), server_hostname=DATA_PLANE_NAME
    )
    return RawConnection(reader, writer)


def served_cn(conn: RawConnection) -> str:
    cert = conn.writer.get_extra_info("peercert")
    return dict(x[0] for x in cert["subject"])["commonName"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def tls_pod(
    certs: Certs, leaf: str, ip: str, tls_port: int, seen: list[dict[str, str]]
) -> AsyncIterator[QueueProxySubprocess]:
    """A real queue-proxy on `ip` serving TLS on `tls_port` with `<leaf>/tls.{crt,key}` (§2.3)."""

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _line, headers, _ = await read_request_head(reader)
            seen.append(headers)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    async with raw_upstream(app) as user_port, queue_proxy(certs, leaf, ip, tls_port, user_port) as qp:
        yield qp


@contextlib.asynccontextmanager
async def queue_proxy(
    certs: Certs, leaf: str, ip: str, tls_port: int, user_port: int
) -> AsyncIterator[QueueProxySubprocess]:
    qp = QueueProxySubprocess(
        user_port,
        SLUICE_CERT_DIR=str(certs.dir(leaf)),
        SLUICE_BIND_HOST=ip,
        SERVING_POD_IP=ip,
        QUEUE_SERVING_TLS_PORT=str(tls_port),
    )
    qp.port = free_port()  # the plain port, reached on `ip`
    qp.env["QUEUE_SERVING_PORT"] = str(qp.port)
    await asyncio.to_thread(_start_on, qp, ip)
    try:
        yield qp
    finally:
        qp.stop()


def _start_on(qp: QueueProxySubprocess, ip: str) -> None:
    """`QueueProxySubprocess.start` waits on 127.0.0.1; this pod listens on `ip`, TLS port first."""
    qp.proc = subprocess.Popen(
        [sys.executable, "-m", "proxy"], cwd=ROOT, env=qp.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    for port in (int(qp.env["QUEUE_SERVING_TLS_PORT"]), qp.port):
        while True:
            if qp.proc.poll() is not None:
                err = qp.proc.stderr.read().decode() if qp.proc.stderr else ""
                raise RuntimeError("queue-proxy exited: " + err)
            if time.monotonic() > deadline:
                raise RuntimeError("queue-proxy did not listen")
            with contextlib.suppress(OSError), socket.create_connection((ip, port), 0.2):
                break
            time.sleep(0.02)


async def start_tls_activator(make_activator: MakeActivator, tls_port: int, **env: str) -> ActivatorProcess:
    return await make_activator(TLS_ON, SLUICE_HTTPS_PORT="0", SLUICE_QUEUE_TLS_PORT=str(tls_port), **env)


# ---- tests --------------------------------------------------------------------------------------


async def test_serves_https_with_the_secret_and_rotates(
    kube: Kube, make_activator: MakeActivator, certs: Certs
) -> None:
    await put_secret(kube, certs)
    act = await start_tls_activator(make_activator, free_port())
    assert act.https_port not in (0, act.port, act.h2c_port)
    conn = await tls_open(act.https_port, certs)
    try:
        assert served_cn(conn) == "activator"
        assert conn.writer.get_extra_info("ssl_object").version() == "TLSv1.3"  # §3.2 default minimum
        r = await conn.request(get("/healthz", {"K-Network-Probe": "activator"}))
        assert (r.status, r.body) == (200, b"activator")
        # The plain ports keep serving the same handler (§3.2).
        plain = await RawConnection.open(act.port)
        r = await plain.request(get("/healthz", {"K-Network-Probe": "activator"}))
        assert (r.status, r.body) == (200, b"activator")
        await plain.close()
        # ALPN offers h2 (HTTP/2 over TLS) and http/1.1.
        h2 = await tls_open(act.https_port, certs, ["h2", "http/1.1"])
        assert h2.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        await h2.close()
        # A TLS 1.2-only client is refused (minimum 1.3).
        old = client_context(certs)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", act.https_port, ssl=old, server_hostname=DATA_PLANE_NAME)
        # Rotation: new connections get the new certificate, the open one keeps working.
        await put_secret(kube, certs, "activator-rotated")
        assert act.tls is not None
        first = act.tls.server_context
        await eventually(lambda: act.tls is not None and act.tls.server_context is not first)
        fresh = await tls_open(act.https_port, certs)
        assert served_cn(fresh) == "activator-rotated"
        await fresh.close()
        r = await conn.request(get("/healthz", {"K-Network-Probe": "activator"}))
        assert r.status == 200
    finally:
        await conn.close()


async def test_tls_version_env(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    act = await start_tls_activator(
        make_activator, free_port(), ACTIVATOR_TLS_MIN_VERSION="1.2", ACTIVATOR_TLS_MAX_VERSION="1.2"
    )
    conn = await tls_open(act.https_port, certs)
    assert conn.writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    await conn.close()


async def test_proxies_to_a_queue_proxy_over_tls(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    tls_port = free_port()
    seen: list[dict[str, str]] = []
    async with tls_pod(certs, "pod", "127.0.0.1", tls_port, seen) as qp:
        await kube.create_revision(REV, cc=0)
        await kube.set_private(REV, [], [("127.0.0.1", qp.port)])  # not ready for Kubernetes yet
        act = await start_tls_activator(make_activator, tls_port)
        # The probe over TLS (§3.4 over §3.7) makes the pod healthy.
        await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity > 0)
        pool = act.pools.pools[f"127.0.0.1:{qp.port}"]
        assert isinstance(pool, TLSUpstreamPool) and pool.port == tls_port
        for port, opener in ((act.https_port, True), (act.port, False)):
            conn = await tls_open(port, certs) if opener else await RawConnection.open(port)
            r = await conn.request(get("/x", ROUTED, host="hello.default.example.com"))
            await conn.close()
            assert (r.status, r.body) == (200, b"hello")
            assert seen[-1]["host"] == "hello.default.example.com"  # QP restored K-Original-Host
            assert seen[-1]["k-proxy-request"] == "activator"
            assert "knative-serving-revision" not in seen[-1]
        # Nothing went over the pod's plain port: only TLS connections were made.
        assert pool.open_connections >= 1


async def test_http2_goes_upstream_as_h2_over_tls(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    tls_port = free_port()

    async def handler(req: UpstreamRequest) -> None:
        assert req.conn is not None
        req.conn.respond(req.stream_id, 200, [(b"x-seen-proxy", req.header(b"k-proxy-request") or b"")])
        await req.conn.send_body(req.stream_id, b"over h2")

    async with h2_upstream(handler) as app, queue_proxy(certs, "pod", "127.0.0.1", tls_port, app.port) as qp:
        await kube.create_revision(REV, cc=0)
        await kube.set_private(REV, [("127.0.0.1", qp.port)])
        act = await start_tls_activator(make_activator, tls_port)
        await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity > 0)
        # HTTP/2 in over TLS (ALPN h2) → h2 over TLS to the pod (§3.7 "h2c (or h2 over TLS) upstream").
        conn = await tls_open(act.https_port, certs, ["h2"])
        client = H2Client(conn.reader, conn.writer)
        client.conn.initiate_connection()
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read_loop())
        try:
            headers = [(k.lower(), v) for k, v in ROUTED.items()]
            result = await client.request("/x", headers=headers)
        finally:
            await client.close()
        got = dict(result.headers)
        assert got[b":status"] == b"200" and bytes(result.buffer) == b"over h2"
        assert got[b"x-seen-proxy"] == b"activator"
        pool = act.pools.pools[f"127.0.0.1:{qp.port}"]
        assert isinstance(pool, TLSUpstreamPool) and isinstance(pool.h2c_pool(), TLSH2UpstreamPool)


async def test_pod_without_namespace_san_is_refused(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    tls_port = free_port()
    seen: list[dict[str, str]] = []
    async with tls_pod(certs, "pod-other-ns", "127.0.0.2", tls_port, seen) as qp:
        await kube.create_revision(REV, cc=0)
        # Mode `disabled` trusts Kubernetes readiness without probing (§3.4): the request is sent.
        await kube.set_private(REV, [("127.0.0.2", qp.port)])
        act = await start_tls_activator(make_activator, tls_port, SLUICE_MESH_COMPATIBILITY_MODE="disabled")
        await eventually(lambda: (e := act.revisions.get(KEY)) is not None and e.throttler.capacity > 0)
        conn = await RawConnection.open(act.port)
        r = await conn.request(get("/x", ROUTED, host="hello.default.example.com"))
        await conn.close()
        assert r.status == 502
        assert b"kn-user-default" in r.body
        assert seen == []
        # And a probe fails the same way (§3.4): such a pod never becomes healthy.
        result = await probe_queue_proxy(act.pools.get(f"127.0.0.2:{qp.port}", "default"), b"x", 2.0)
        assert not result.ok and "kn-user-default" in result.error


async def test_trust_bundle_configmaps_add_roots(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    tls_port = free_port()
    async with tls_pod(certs, "pod-ca2", "127.0.0.1", tls_port, []) as qp:
        act = await start_tls_activator(make_activator, tls_port)
        dest = f"127.0.0.1:{qp.port}"
        result = await probe_queue_proxy(act.pools.get(dest, "default"), b"x", 2.0)
        assert not result.ok and "failed to verify certificate" in result.error
        body = {
            "metadata": {"name": "extra-roots", "labels": {TRUST_BUNDLE_LABEL: "true"}},
            "data": {"ca2.pem": certs.pem("ca2.crt").decode()},
        }
        await kube.core.create_namespaced_config_map(SYSTEM_NS, body)
        assert act.tls is not None
        await eventually(lambda: act.tls is not None and act.tls.generation >= 2)
        result = await probe_queue_proxy(act.pools.get(dest, "default"), b"x", 2.0)
        assert result.ok, result.error


async def test_nothing_changes_with_tls_disabled(kube: Kube, make_activator: MakeActivator, certs: Certs) -> None:
    await put_secret(kube, certs)
    act = await make_activator(SLUICE_HTTPS_PORT="0")
    assert act.tls is None and act.https_port == 0
    assert len(act.server.ports) == 2
    assert [i.name for i in act.informers] == ["revisions", "services", "private-endpoints", "public-endpoints"]
    pool = act.pools.get("127.0.0.1:8012", "default")
    assert type(pool) is UpstreamPool and pool.port == 8012 and pool.ssl is None
