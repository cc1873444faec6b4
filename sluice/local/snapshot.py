"""The live view of a `sluice local` instance, written every second by the supervisor:
`status.json` (what `sluice local status` shows) and one line per second in `samples.jsonl`
(what `sluice local report` plots).

Sources, as an operator of a cluster would use them: the API objects (Service, Revision, PA,
SKS, Deployment, Pods), the ingress's request counters, each queue-proxy's
`kn_serving_queue_depth` on :9091, and the autoscaler's `PANICKING` / `un-panicking` log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from .controller.names import condition, controlled_by, meta
from .controller.network import pod_is_ready
from .procs import http_get

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["Sampler", "build_snapshot"]


class _PanicWatcher:
    """Follows the autoscaler's JSON log for its panic-mode transitions (per `ns/revision`)."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.offset = 0
        self.panicking: dict[str, bool] = {}

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            if b"panicking" not in line.lower():
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                key = str(rec.get("knative.dev/key", ""))
                msg = str(rec.get("message", ""))
                if msg.startswith("PANICKING"):
                    self.panicking[key] = True
                elif msg.startswith("un-panicking"):
                    self.panicking[key] = False


def _pod_view(pod: dict[str, Any]) -> dict[str, Any]:
    st = pod.get("status") or {}
    user: dict[str, Any] = next(iter(st.get("containerStatuses") or ()), {})
    waiting = (user.get("state") or {}).get("waiting") or {}
    last = (user.get("lastState") or {}).get("terminated") or {}
    out: dict[str, Any] = {
        "name": meta(pod)["name"],
        "ip": st.get("podIP", ""),
        "ready": pod_is_ready(pod),
        "phase": "Terminating" if meta(pod).get("deletionTimestamp") else st.get("phase", "Pending"),
        "restarts": int(user.get("restartCount", 0)),
    }
    if waiting.get("reason"):
        out["waiting"] = waiting.get("reason")
        if waiting.get("message"):
            out["waiting_message"] = waiting["message"]
    if last:
        out["last_exit"] = {"code": last.get("exitCode"), "output": last.get("message", "")}
    if st.get("message"):
        out["message"] = st["message"]
    return out


def build_snapshot(sup: Supervisor, queue: dict[str, int], panic: dict[str, bool]) -> dict[str, Any]:
    c = sup.caches
    assert c is not None
    ingress_stats = sup.ingress.stats if sup.ingress is not None else {}
    services = []
    for ksvc in sorted(c.ksvcs.items(), key=lambda o: (meta(o).get("namespace", ""), meta(o)["name"])):
        m = meta(ksvc)
        ns, name = m.get("namespace", "default"), m["name"]
        st = ksvc.get("status") or {}
        ready_cond = condition(ksvc, "Ready") or {}
        cfg = c.configurations.get(ns, name)
        revisions = []
        for rev in sorted(c.in_namespace(c.revisions, ns), key=lambda o: str(meta(o)["name"])):
            if cfg is None or not controlled_by(rev, cfg):
                continue
            rname = meta(rev)["name"]
            pa = c.pas.get(ns, rname) or {}
            sks = c.sks.get(ns, rname) or {}
            dep = c.deployments.get(ns, f"{rname}-deployment") or {}
            pods = [
                p
                for p in c.in_namespace(c.pods, ns)
                if (meta(p).get("labels") or {}).get("serving.knative.dev/revision") == rname
            ]
            rcond = condition(rev, "Ready") or {}
            percent = sum(int(t.get("percent") or 0) for t in st.get("traffic") or () if t.get("revisionName") == rname)
            revisions.append(
                {
                    "name": rname,
                    "ready": rcond.get("status", "Unknown"),
                    "reason": rcond.get("reason", ""),
                    "message": rcond.get("message", ""),
                    "traffic": percent,
                    "desired": (pa.get("status") or {}).get("desiredScale"),
                    "replicas": (dep.get("spec") or {}).get("replicas"),
                    "ready_pods": sum(1 for p in pods if pod_is_ready(p) and not meta(p).get("deletionTimestamp")),
                    "pods": [_pod_view(p) for p in sorted(pods, key=lambda p: str(meta(p)["name"]))],
                    "mode": (sks.get("spec") or {}).get("mode", ""),
                    "active": (condition(pa, "Active") or {}).get("status", "Unknown") if pa else "Unknown",
                    "panic": panic.get(f"{ns}/{rname}", False),
                    "queue_depth": sum(queue.get(str((p.get("status") or {}).get("podIP", "")), 0) for p in pods),
                }
            )
        stats = ingress_stats.get((ns, name))
        services.append(
            {
                "namespace": ns,
                "name": name,
                "url": st.get("url", ""),
                "ready": ready_cond.get("status", "Unknown"),
                "message": ready_cond.get("message", ""),
                "latest_created": st.get("latestCreatedRevisionName", ""),
                "latest_ready": st.get("latestReadyRevisionName", ""),
                "requests": stats.requests if stats else 0,
                "in_flight": stats.in_flight if stats else 0,
                "errors_5xx": stats.errors_5xx if stats else 0,
                "revisions": revisions,
            }
        )
    return {
        "time": time.time(),
        "ingress": f"http://{sup.opts.host}:{sup.opts.port}",
        "domain": sup.opts.domain,
        "logs": str(sup.state.logs),
        "services": services,
    }


class Sampler:
    def __init__(self, sup: Supervisor, period: float = 1.0) -> None:
        self.sup = sup
        self.period = period
        self.panic = _PanicWatcher(sup.state.logs / "autoscaler.log")
        self._task: asyncio.Task[None] | None = None
        self._last_requests: dict[str, int] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _queue_depths(self) -> dict[str, int]:
        c = self.sup.caches
        assert c is not None
        ips = [
            str((p.get("status") or {}).get("podIP"))
            for p in c.pods.items()
            if (p.get("status") or {}).get("podIP") and not meta(p).get("deletionTimestamp")
        ]

        async def one(ip: str) -> tuple[str, int]:
            status, body = await http_get(ip, 9091, "/metrics", {}, 0.5)
            depth = 0
            if status == 200:
                for line in body.decode("latin-1").splitlines():
                    if line.startswith("kn_serving_queue_depth"):
                        with contextlib.suppress(ValueError, IndexError):
                            depth += int(float(line.split()[-1]))
            return ip, depth

        return dict(await asyncio.gather(*(one(ip) for ip in ips)))

    async def _run(self) -> None:
        state = self.sup.state
        while True:
            try:
                self.panic.poll()
                queue = await self._queue_depths()
                snap = build_snapshot(self.sup, queue, self.panic.panicking)
                state.write_json(state.status_file, snap)
                self._append_sample(snap)
            except asyncio.CancelledError:
                raise
            except Exception:  # a sample must never stop the supervisor
                pass
            await asyncio.sleep(self.period)

    def _append_sample(self, snap: dict[str, Any]) -> None:
        sample: dict[str, Any] = {"t": snap["time"], "services": {}}
        for svc in snap["services"]:
            key = f"{svc['namespace']}/{svc['name']}"
            rps = svc["requests"] - self._last_requests.get(key, svc["requests"])
            self._last_requests[key] = svc["requests"]
            sample["services"][key] = {
                "rps": rps / self.period,
                "in_flight": svc["in_flight"],
                "errors_5xx": svc["errors_5xx"],
                "ready_pods": sum(r["ready_pods"] for r in svc["revisions"]),
                "desired": sum(max(0, r["desired"] or 0) for r in svc["revisions"]),
                "panic": any(r["panic"] for r in svc["revisions"]),
                "queue_depth": sum(r["queue_depth"] for r in svc["revisions"]),
            }
        with open(self.sup.state.samples_file, "a") as f:
            f.write(json.dumps(sample) + "\n")
