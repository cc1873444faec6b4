"""The activator probe before scale to zero (CONTRACT.md §4.4 step 5, §1.3; Knative
`kpa/scaler.go` `activatorProbe`, `paToProbeTarget`).

`GET http://<status.serviceName>.<ns>.svc.<cluster-domain>:<80|81>//healthz` (the double slash is
Knative's) with `K-Network-Probe: activator` and `User-Agent: Knative-Autoscaling-Probe`; only
200 with body exactly `activator` proves the public service routes to an activator (a
queue-proxy answers 400). A failed probe starts a background prober: every 1 s for up to 45 s,
then the PA is re-enqueued after 1 s.

Without cluster DNS (`sluice local`, tests) the target can be redirected:
- `url_template` (env `SLUICE_ACTIVATOR_PROBE_URL`): a `str.format` template with `{service}`,
  `{namespace}`, `{port}` and `{cluster_domain}`, e.g. `http://127.0.0.1:8012//healthz`;
- `endpoints` (env `SLUICE_ACTIVATOR_PROBE_ENDPOINTS=true`): resolve the public service through
  its core/v1 Endpoints (first ready address in string order, port `http` / `http2`), which is
  where the Service would send the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

__all__ = [
    "ACTIVATOR_BODY",
    "PROBE_PERIOD",
    "PROBE_TIMEOUT",
    "ActivatorProber",
    "EndpointsResolver",
]

logger = logging.getLogger("autoscaler.prober")

ACTIVATOR_BODY = "activator"
PROBE_HEADERS = {"K-Network-Probe": "activator", "User-Agent": "Knative-Autoscaling-Probe"}
PROBE_PERIOD = 1.0
PROBE_TIMEOUT = 45.0
PROBE_REQUEUE = 1.0
# One probe request; Go relies on its transport's dial timeout. Short, so a black-holed service
# does not hold a reconcile worker.
REQUEST_TIMEOUT = 3.0

EndpointsResolver = Callable[[str, str, str], Awaitable["tuple[str, int] | None"]]
"""(namespace, service, port name) -> (ip, port) of the first ready address, or None."""


def service_port(protocol_type: str) -> tuple[int, str]:
    """The public service port and its name: 81 `http2` for h2c, else 80 `http`."""
    return (81, "http2") if protocol_type == "h2c" else (80, "http")


class ActivatorProber:
    def __init__(
        self,
        *,
        cluster_domain: str = "cluster.local",
        url_template: str | None = None,
        endpoints: EndpointsResolver | None = None,
        period: float = PROBE_PERIOD,
        timeout: float = PROBE_TIMEOUT,
        requeue_after: float = PROBE_REQUEUE,
    ) -> None:
        self.cluster_domain = cluster_domain
        self.url_template = url_template
        self.endpoints = endpoints
        self.period = period
        self.timeout = timeout
        self.requeue_after = requeue_after
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                skip_auto_headers=("User-Agent",),
                connector=aiohttp.TCPConnector(force_close=True),
            )
        return self._session

    async def target(self, pa: Mapping[str, Any]) -> str | None:
        meta = pa.get("metadata") or {}
        ns = str(meta.get("namespace", ""))
        service = str((pa.get("status") or {}).get("serviceName") or "")
        if not service:
            return None
        port, port_name = service_port(str((pa.get("spec") or {}).get("protocolType") or "http1"))
        if self.url_template:
            return self.url_template.format(
                service=service, namespace=ns, port=port, cluster_domain=self.cluster_domain
            )
        if self.endpoints is not None:
            resolved = await self.endpoints(ns, service, port_name)
            if resolved is None:
                return None
            ip, target_port = resolved
            host = f"[{ip}]" if ":" in ip else ip
            return f"http://{host}:{target_port}//healthz"
        return f"http://{service}.{ns}.svc.{self.cluster_domain}:{port}//healthz"

    async def probe_url(self, url: str) -> bool:
        try:
            async with self._sess().get(URL(url, encoded=True), headers=PROBE_HEADERS, allow_redirects=False) as resp:
                body = await resp.read()
                return resp.status == 200 and body == ACTIVATOR_BODY.encode()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False

    async def probe(self, pa: Mapping[str, Any]) -> bool:
        """One probe; False on any failure (no service name yet, unresolvable, wrong answer)."""
        url = await self.target(pa)
        if url is None:
            return False
        return await self.probe_url(url)

    def offer(self, key: str, pa: Mapping[str, Any], done: Callable[[str], None]) -> bool:
        """Starts the background prober for `key` unless one is in flight; `done(key)` is called
        `requeue_after` seconds after it succeeds or times out."""
        task = self._inflight.get(key)
        if task is not None and not task.done():
            return False
        self._inflight[key] = asyncio.create_task(self._probe_loop(key, dict(pa), done), name=f"probe {key}")
        return True

    def cancel(self, key: str) -> None:
        task = self._inflight.pop(key, None)
        if task is not None:
            task.cancel()

    async def _probe_loop(self, key: str, pa: dict[str, Any], done: Callable[[str], None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ok = False
        try:
            while loop.time() < deadline:
                if await self.probe(pa):
                    ok = True
                    break
                await asyncio.sleep(self.period)
            logger.info(
                "activator probe for %s %s",
                key,
                "succeeded" if ok else "timed out",
                extra={"fields": {"knative.dev/key": key}},
            )
            await asyncio.sleep(self.requeue_after)
            done(key)
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
