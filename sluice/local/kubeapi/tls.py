"""Serving certificate for the embedded server.

kubectl (client-go) only sends a bearer token over TLS, so a token-protected server must speak
https for kubectl to use its kubeconfig unchanged. The certificate is self-signed for the
loopback names and named in the kubeconfig as `certificate-authority` (a file path). It is
made with the `openssl` command line tool (the stdlib cannot create certificates), or supplied
by the caller.
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
from pathlib import Path


class TLSError(RuntimeError):
    pass


def ensure_self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """Return (cert, key) in `directory`, creating them on first use (kept across restarts)."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError(
            "the openssl command is needed to create the API server's certificate; install it, "
            "pass tls_cert/tls_key, or run without TLS (tls=False; kubectl then cannot send the token)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    sans = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    try:
        ipaddress.ip_address(host)
        if host not in ("127.0.0.1", "::1"):
            sans.append(f"IP:{host}")
    except ValueError:
        sans.append(f"DNS:{host}")
    cmd = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "3650",
        "-subj",
        "/CN=sluice-local-apiserver",
        "-addext",
        "subjectAltName=" + ",".join(sans),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TLSError(f"openssl failed to create the API server certificate: {proc.stderr.strip()}")
    key.chmod(0o600)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
