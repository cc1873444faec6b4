"""The live view of a `sluice local` instance, written every second by the supervisor:
`status.json` (what `sluice local status` shows) and one line per second in `samples.jsonl`
(what `sluice local report` plots).

Sources, as an operator of a cluster would use them: the API objects (Service, Revision, PA,
SKS, Deployment, Pods), the ingress's request counters, each queue-proxy's current Stat on :9090
(what the autoscaler scrapes, CONTRACT.md §1.1/§4.8), and the autoscaler's `PANICKING` /
`un-panicking` log lines.

The queue depth is the Stat's `average_concurrent_requests` (requests at the pod, waiting in the
breaker or running, averaged over the last 1 s reporting period, §2.9), not the Prometheus
`kn_serving_queue_depth` gauge: that gauge is set when a request *finishes*, so it keeps its last
value once load stops (and exists only with containerConcurrency > 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice.wire import DecodeError, decode_stat

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


@dataclass(frozen=True, slots=True)
class PodStat:
    """One pod's current Stat (the last 1 s reporting period)."""

    concurrency: float = 0.0
    rps: float = 0.0


# Knative's config-autoscaler defaults for the target (CONTRACT.md §4.1).
_TARGET_DEFAULTS = {"concurrency": 100.0, "rps": 200.0}
_TARGET_KEYS = {"concurrency": "container-concurrency-target-default", "rps": "requests-per-second-target-default"}


def _target(rev: dict[str, Any], config: dict[str, str]) -> dict[str, Any]:
    """The per-pod target the autoscaler aims at (§4.6): the `target` annotation, else
    containerConcurrency (concurrency metric), else the ConfigMap default; times the utilization."""
    ann = meta(rev).get("annotations") or {}
    metric = ann.get("autoscaling.knative.dev/metric", "concurrency")
    metric = metric if metric in _TARGET_DEFAULTS else "concurrency"
    cc = int((rev.get("spec") or {}).get("containerConcurrency") or 0)
    try:
        value = float(ann["autoscaling.knative.dev/target"])
    except (KeyError, ValueError):
        value = float(cc) if metric == "concurrency" and cc > 0 else _config_float(config, _TARGET_KEYS[metric], metric)
    if metric == "concurrency" and cc > 0:
        value = min(value, float(cc))
    try:
        util = float(ann["autoscaling.knative.dev/target-utilization-percentage"])
    except (KeyError, ValueError):
        util = float(config.get("container-concurrency-target-percentage", "70") or 70)
    return {"metric": metric, "value": value, "utilization": util / 100.0}


def _config_float(config: dict[str, str], key: str, metric: str) -> float:
    try:
        return float(config[key])
    except (KeyError, ValueError):
        return _TARGET_DEFAULTS[metric]


GENERATION_LABEL = "serving.knative.dev/configurationGeneration"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _image(rev: dict[str, Any]) -> str:
    containers = (rev.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def _conditions(obj: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {k: str(cond.get(k, "")) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
        for cond in (obj.get("status") or {}).get("conditions") or ()
        if isinstance(cond, dict)
    ]


def _with_port(url: str, port: int) -> str:
    """A Knative URL (`http://host`) with the ingress port, which is what a client must dial."""
    if not url or port == 80 or not url.startswith("http://"):
        return url
    scheme_host, slash, rest = url[len("http://") :].partition("/")
    return f"http://{scheme_host}:{port}{slash}{rest}"


def ingress_base(host: str, port: int) -> str:
    """The address a client on this machine dials (a wildcard listen address is reached on loopback)."""
    dial = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{dial}:{port}"


def build_snapshot(sup: Supervisor, stats: dict[str, PodStat], panic: dict[str, bool]) -> dict[str, Any]:
    c = sup.caches
    assert c is not None
    ingress_stats = sup.ingress.stats if sup.ingress is not None else {}
    port = sup.opts.port
    base = ingress_base(sup.opts.host, port)
    config = dict(sup.opts.autoscaler_config)
    services = []
    for ksvc in sorted(c.ksvcs.items(), key=lambda o: (meta(o).get("namespace", ""), meta(o)["name"])):
        m = meta(ksvc)
        ns, name = m.get("namespace", "default"), m["name"]
        st = ksvc.get("status") or {}
        ready_cond = condition(ksvc, "Ready") or {}
        cfg = c.configurations.get(ns, name)
        traffic = [dict(t) for t in st.get("traffic") or ()]
        for t in traffic:
            if t.get("url"):
                t["url"] = _with_port(str(t["url"]), port)
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
            live = [stats.get(str((p.get("status") or {}).get("podIP", ""))) for p in pods]
            concurrency = sum(s.concurrency for s in live if s is not None)
            rcond = condition(rev, "Ready") or {}
            mine = [t for t in traffic if t.get("revisionName") == rname]
            desired = (pa.get("status") or {}).get("desiredScale")
            revisions.append(
                {
                    "name": rname,
                    "created": meta(rev).get("creationTimestamp", ""),
                    "generation": _int((meta(rev).get("labels") or {}).get(GENERATION_LABEL)),
                    "image": _image(rev),
                    "conditions": _conditions(rev),
                    "ready": rcond.get("status", "Unknown"),
                    "reason": rcond.get("reason", ""),
                    "message": rcond.get("message", ""),
                    "traffic": sum(int(t.get("percent") or 0) for t in mine),
                    "tags": [str(t["tag"]) for t in mine if t.get("tag")],
                    # Unknown (no PA status yet, or Knative's -1) is None, shown as "-".
                    "desired": desired if isinstance(desired, int) and desired >= 0 else None,
                    "replicas": (dep.get("spec") or {}).get("replicas"),
                    "ready_pods": sum(1 for p in pods if pod_is_ready(p) and not meta(p).get("deletionTimestamp")),
                    "pods": [_pod_view(p) for p in sorted(pods, key=lambda p: str(meta(p)["name"]))],
                    "mode": (sks.get("spec") or {}).get("mode", ""),
                    "active": (condition(pa, "Active") or {}).get("status", "Unknown") if pa else "Unknown",
                    "panic": panic.get(f"{ns}/{rname}", False),
                    "queue_depth": round(concurrency),
                    "concurrency": round(concurrency, 3),
                    "rps": round(sum(s.rps for s in live if s is not None), 3),
                    "target": _target(rev, config),
                }
            )
        stats_ = ingress_stats.get((ns, name))
        url = _with_port(str(st.get("url", "")), port)
        host = str(st.get("url", "")).removeprefix("http://").split("/")[0]
        services.append(
            {
                "namespace": ns,
                "name": name,
                "created": m.get("creationTimestamp", ""),
                "url": url,
                # What works without DNS for the domain: the Host header, or the path prefix.
                "curl": f"curl -H 'Host: {host}' {base}/" if host else "",
                "path_url": f"{base}/{name}/" if ns == "default" else f"{base}/{ns}/{name}/",
                "ready": ready_cond.get("status", "Unknown"),
                "reason": ready_cond.get("reason", ""),
                "message": ready_cond.get("message", ""),
                "conditions": _conditions(ksvc),
                "latest_created": st.get("latestCreatedRevisionName", ""),
                "latest_ready": st.get("latestReadyRevisionName", ""),
                "traffic": traffic,
                "requests": stats_.requests if stats_ else 0,
                "in_flight": stats_.in_flight if stats_ else 0,
                "errors_5xx": stats_.errors_5xx if stats_ else 0,
                "revisions": revisions,
            }
        )
    return {
        "time": time.time(),
        "ingress": base,
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
        # The first snapshot is written before `up` reports ready, so `status` right after `up`
        # already lists the applied Services (not a transient "no services").
        self.write(self.sup.state, {})
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pod_stats(self) -> dict[str, PodStat]:
        c = self.sup.caches
        assert c is not None
        ips = [
            str((p.get("status") or {}).get("podIP"))
            for p in c.pods.items()
            if (p.get("status") or {}).get("podIP") and not meta(p).get("deletionTimestamp")
        ]

        async def one(ip: str) -> tuple[str, PodStat | None]:
            status, body = await http_get(ip, 9090, "/metrics", {"Accept": "application/protobuf"}, 0.5)
            if status != 200:
                return ip, None
            try:
                stat = decode_stat(body)
            except DecodeError:
                return ip, None
            return ip, PodStat(stat.average_concurrent_requests, stat.request_count)

        return {ip: s for ip, s in await asyncio.gather(*(one(ip) for ip in ips)) if s is not None}

    def write(self, state: Any, stats: dict[str, PodStat]) -> dict[str, Any]:
        snap = build_snapshot(self.sup, stats, self.panic.panicking)
        state.write_json(state.status_file, snap)
        return snap

    async def _run(self) -> None:
        state = self.sup.state
        while True:
            try:
                self.panic.poll()
                snap = self.write(state, await self._pod_stats())
                self._append_sample(snap)
            except asyncio.CancelledError:
                raise
            except Exception:  # a sample must never stop the supervisor
                pass
            await asyncio.sleep(self.period)

    def _append_sample(self, snap: dict[str, Any]) -> None:
        """One line of `samples.jsonl`: per Service the ingress's view, per Revision the pods' view."""
        sample: dict[str, Any] = {"t": snap["time"], "services": {}}
        for svc in snap["services"]:
            key = f"{svc['namespace']}/{svc['name']}"
            rps = svc["requests"] - self._last_requests.get(key, svc["requests"])
            self._last_requests[key] = svc["requests"]
            sample["services"][key] = {
                "rps": rps / self.period,
                "in_flight": svc["in_flight"],
                "errors_5xx": svc["errors_5xx"],
                "ready": svc["ready"],
                "reason": svc["reason"],
                "message": svc["message"],
                "revisions": {
                    r["name"]: {
                        "rps": r["rps"],
                        "concurrency": r["concurrency"],
                        "ready_pods": r["ready_pods"],
                        "desired": r["desired"],
                        "panic": r["panic"],
                        "traffic": r["traffic"],
                        "ready": r["ready"],
                        "target": r["target"],
                    }
                    for r in svc["revisions"]
                },
            }
        with open(self.sup.state.samples_file, "a") as f:
            f.write(json.dumps(sample) + "\n")
