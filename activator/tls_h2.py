"""h2 over TLS to a queue-proxy (CONTRACT.md §3.7 Protocol), with the checks of `tls.py`.

A module of its own so that `sluice.http.h2client` and h2 load only when a revision speaks HTTP/2
(`TLSUpstreamPool._new_h2c_pool`), not in every activator (issue 19, per-pod cost).
"""

from __future__ import annotations

import contextlib

from sluice.http.client import DialPolicy, UpstreamClosed
from sluice.http.h2client import H2UpstreamConnection, H2UpstreamPool

from .tls import PeerVerificationError, TLSMaterial, _dial_tls, peer_san_problem

__all__ = ["TLSH2UpstreamPool"]


class TLSH2UpstreamPool(H2UpstreamPool):
    def __init__(self, host: str, port: int, dial: DialPolicy, material: TLSMaterial, namespace: str) -> None:
        super().__init__(host, port, dial, ssl=material.client_h2)
        self.material = material
        self.namespace = namespace

    async def _dial(self) -> H2UpstreamConnection:
        transport, conn = await _dial_tls(
            self.host, self.port, self.dial, lambda: H2UpstreamConnection(self), self.material.client_h2
        )
        problem = peer_san_problem(transport, self.namespace)
        if problem is not None or self.closing:
            with contextlib.suppress(Exception):
                conn.close()
            if problem is not None:
                raise PeerVerificationError(problem)
            raise UpstreamClosed("EOF")
        self.conns.append(conn)
        return conn
