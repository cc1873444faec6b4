"""The ingress of `sluice local`: what Knative's route reconciler + a KIngress implementation do.

One port; a request is matched to a Route by Host (`<route>.<ns>.<domain>`, `<tag>-<route>...`,
or the cluster-local forms) or, failing that, by a path prefix (`/<route>/...` or
`/<ns>/<route>/...`, and `/<tag>-<route>/...` for a tag, stripped before forwarding). The
Route's `status.traffic` picks a revision by weight, and the request goes to an address of the
revision's **public** Endpoints — the activator while the SKS is in Proxy mode, the pods in
Serve mode (CONTRACT.md §0) — with `Knative-Serving-Revision` / `Knative-Serving-Namespace`
added, as Knative's ingresses do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice.http.client import UpstreamPool
from sluice.http.forward import Forwarder, build_request_head
from sluice.http.server import HttpExchange, HttpServer

from .controller.caches import Caches
from .controller.names import meta

__all__ = ["Ingress", "RouteStats"]

_DROP = frozenset({b"knative-serving-revision", b"knative-serving-namespace"})
# A request that never reached an app (the dial to the activator or pod failed, or a Sluice
# queue-proxy / activator answered 502 marked not sent, see `sluice.http.forward`) is sent to
# another address of the same Endpoints (the other activator replica, another pod), what
# Envoy-based ingresses do with `retry_on: connect-failure`; the failed address sits out
# `DOWN_FOR` seconds. With no other address (every activator restarting) the request is held and
# retried until an address takes it, for at most `ENDPOINTS_WAIT` from its arrival. Nothing that
# may have reached an app is ever sent twice.

# How long a request waits for a route's endpoints to appear (a revision just created), or
# for an address that takes it after the ones tried failed before it reached them.
ENDPOINTS_WAIT = 30.0
# How long an address that refused a request stays out of the rotation (then it is tried again:
# a restarted activator is back within seconds).
DOWN_FOR = 0.25
# How often a held request looks again (an Endpoints change wakes it sooner).
HOLD_POLL = 0.1


@dataclass
class RouteStats:
    requests: int = 0
    in_flight: int = 0
    errors_5xx: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Target:
    namespace: str
    route: str
    host: str
    # (revision, weight) choices; a tag host has exactly one.
    choices: tuple[tuple[str, int], ...]


class _Table:
    def __init__(self, caches: Caches, domain: str) -> None:
        self.hosts: dict[str, _Target] = {}
        self.paths: dict[str, _Target] = {}
        names: dict[str, list[_Target]] = {}
        tag_paths: dict[str, _Target] = {}
        tag_names: dict[str, list[_Target]] = {}
        for route in caches.routes.items():
            m = meta(route)
            ns, name = m.get("namespace", "default"), m["name"]
            traffic = (route.get("status") or {}).get("traffic") or []
            host = f"{name}.{ns}.{domain}"
            weighted = tuple((t["revisionName"], int(t.get("percent") or 0)) for t in traffic if t.get("percent"))
            target = _Target(ns, name, host, weighted)
            for h in (host, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                self.hosts[h] = target
            for t in traffic:
                if t.get("tag"):
                    tag_host = f"{t['tag']}-{name}.{ns}.{domain}"
                    tag_target = _Target(ns, name, tag_host, ((t["revisionName"], 1),))
                    self.hosts[tag_host] = tag_target
                    # The tag's path prefix is its host's first label, `/<tag>-<route>/`, as
                    # `/<route>/` is the route's; a Route of that very name wins (set below).
                    tag_paths[f"{ns}/{t['tag']}-{name}"] = tag_target
                    tag_names.setdefault(f"{t['tag']}-{name}", []).append(tag_target)
            self.paths[f"{ns}/{name}"] = target
            names.setdefault(name, []).append(target)
        for key, tag_target in tag_paths.items():
            self.paths.setdefault(key, tag_target)
        for name, targets in names.items():
            chosen = _pick(targets)
            if chosen is not None:
                self.paths[name] = chosen
        for name, targets in tag_names.items():
            chosen = _pick(targets)
            if chosen is not None:
                self.paths.setdefault(name, chosen)


def _pick(targets: list[_Target]) -> _Target | None:
    """The target of a namespace-less path: the `default` namespace's, else the only one."""
    return next((t for t in targets if t.namespace == "default"), targets[0] if len(targets) == 1 else None)


class Ingress:
    def __init__(self, caches: Caches, domain: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.caches = caches
        self.domain = domain
        self.clock = clock
        self.server = HttpServer(self)
        self.stats: dict[tuple[str, str], RouteStats] = {}
        self._pools: dict[tuple[str, int], UpstreamPool] = {}
        self._table: _Table | None = None
        self._rr = 0
        # (ip, port) -> until when it is out of the rotation (see `mark_down`).
        self._down: dict[tuple[str, int], float] = {}
        self._changed = asyncio.Event()
        caches.subscribe(self._invalidate)
        self._tasks: set[asyncio.Task[None]] = set()

    def _invalidate(self) -> None:
        self._table = None
        self._changed.set()

    def table(self) -> _Table:
        if self._table is None:
            self._table = _Table(self.caches, self.domain)
        return self._table

    async def listen(self, host: str, port: int) -> None:
        await self.server.listen(host, port)

    async def close(self) -> None:
        self.server.stop_accepting()
        for conn in list(self.server.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        for pool in self._pools.values():
            pool.close()

    # ---- routing ------------------------------------------------------------------------

    def match(self, host: bytes, url: bytes) -> tuple[_Target | None, bytes]:
        """The target and the URL to forward (with a matched path prefix removed)."""
        table = self.table()
        h = host.decode("latin-1").lower()
        # Drop a port: after the bracket of an IPv6 literal, else after the last colon.
        h = h.split("]")[0] + "]" if h.startswith("[") else h.rsplit(":", 1)[0]
        target = table.hosts.get(h)
        if target is not None:
            return target, url
        path = url.split(b"?", 1)[0].decode("latin-1")
        segments = path.lstrip("/").split("/")
        for n in (2, 1):
            if len(segments) >= n:
                target = table.paths.get("/".join(segments[:n]))
                if target is not None:
                    prefix_len = 1 + len("/".join(segments[:n]))
                    rest = url[prefix_len:]
                    if not rest.startswith(b"/"):
                        rest = b"/" + rest
                    return target, rest
        return None, url

    def _address(self, namespace: str, revision: str) -> tuple[str, int] | None:
        eps = self.caches.endpoints.get(namespace, revision)
        found: list[tuple[str, int]] = []
        for subset in (eps or {}).get("subsets") or ():
            port = next((int(p["port"]) for p in subset.get("ports") or () if p.get("name") in ("http", "http2")), 0)
            if port:
                found += [(str(a["ip"]), port) for a in subset.get("addresses") or () if a.get("ip")]
        if self._down:
            found = self._without_down(found)
        if not found:
            return None
        self._rr += 1
        return found[self._rr % len(found)]

    def _without_down(self, found: list[tuple[str, int]]) -> list[tuple[str, int]]:
        now = self.clock()
        for addr, until in list(self._down.items()):
            if until <= now:
                del self._down[addr]
        return [a for a in found if a not in self._down]

    def mark_down(self, addr: tuple[str, int]) -> None:
        """`addr` failed a request before the request reached it: out for DOWN_FOR."""
        self._down[addr] = self.clock() + DOWN_FOR

    # ---- handling -------------------------------------------------------------------------

    def __call__(self, ex: HttpExchange) -> None:
        target, url = self.match(ex.header(b"host") or b"", ex.url)
        if target is None or not target.choices:
            ex.respond_error(404, "no route for this host or path" if target is None else "route has no ready revision")
            return
        if len(target.choices) == 1:
            revision = target.choices[0][0]
        else:
            revision = random.choices([c[0] for c in target.choices], weights=[c[1] for c in target.choices])[0]
        stats = self.stats.setdefault((target.namespace, target.route), RouteStats())
        stats.requests += 1
        stats.in_flight += 1
        ex.url = url
        _Relay(self, ex, target, revision, stats).start()

    def pool(self, ip: str, port: int) -> UpstreamPool:
        pool = self._pools.get((ip, port))
        if pool is None:
            pool = self._pools[(ip, port)] = UpstreamPool(ip, port, max_idle=100)
        return pool


class _Relay(Forwarder):
    def __init__(self, ingress: Ingress, ex: HttpExchange, target: _Target, revision: str, stats: RouteStats) -> None:
        Forwarder.__init__(self, ex)
        self.ingress = ingress
        self.target = target
        self.revision = revision
        self.stats = stats
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.addr: tuple[str, int] | None = None
        self.deadline = ingress.clock() + ENDPOINTS_WAIT

    def start(self) -> None:
        self.ex.on_abort = self._client_gone
        self._route()

    def _route(self) -> None:
        addr = self.ingress._address(self.target.namespace, self.revision)
        if addr is not None:
            self._forward(addr)
        else:
            self._hold()

    def _hold(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._wait_for_address())
        self.ingress._tasks.add(self.task)
        self.task.add_done_callback(self.ingress._tasks.discard)

    async def _wait_for_address(self) -> None:
        ingress = self.ingress
        while not self.done:
            addr = ingress._address(self.target.namespace, self.revision)
            if addr is not None:
                self.task = None
                self._forward(addr)
                return
            remaining = self.deadline - ingress.clock()
            if remaining <= 0:
                self.task = None
                if self.addr is None:
                    self.ex.respond_error(503, f"no endpoints for revision {self.revision}")
                    self.finished()
                else:
                    self.on_upstream_error(ConnectionRefusedError("no address of the revision took the request"))
                return
            ingress._changed.clear()
            try:
                await asyncio.wait_for(ingress._changed.wait(), min(remaining, HOLD_POLL))
            except TimeoutError:
                pass

    def retry_elsewhere(self) -> bool:
        """The request reached no app (see the module docstring): another address, or held."""
        if self.done or self.addr is None or self.ingress.clock() >= self.deadline:
            return False
        self.ingress.mark_down(self.addr)
        self._route()
        return True

    def _forward(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        ex = self.ex
        extra = (
            b"Knative-Serving-Revision: " + self.revision.encode() + b"\r\n"
            b"Knative-Serving-Namespace: " + self.target.namespace.encode() + b"\r\n" + ex.conn.xff_line
        )
        self.forward(self.ingress.pool(*addr), build_request_head(ex, self.target.host.encode(), _DROP, extra))

    def _client_gone(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.cancel()

    def finished(self) -> None:
        if self.done:
            return
        self.done = True
        self.ex.on_abort = None
        st = self.stats
        st.in_flight -= 1
        status = self.ex.status
        st.status_counts[status] = st.status_counts.get(status, 0) + 1
        if status >= 500:
            st.errors_5xx += 1


def route_stats_json(stats: dict[tuple[str, str], RouteStats]) -> dict[str, Any]:
    return {
        f"{ns}/{name}": {"requests": s.requests, "in_flight": s.in_flight, "errors_5xx": s.errors_5xx}
        for (ns, name), s in stats.items()
    }
