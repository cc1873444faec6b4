"""Service → Configuration + Route, Configuration → Revision, Revision → Deployment + PodAutoscaler,
and the statuses Knative's controller writes on them (CONTRACT.md §0, §2.2, §4.2).

Readiness chain, as in Knative: a Revision is Ready once its PodAutoscaler's
`ScaleTargetInitialized` is True (the autoscaler sets it when the first pods were ready, and never
resets it); a Configuration's `latestReadyRevisionName` only moves forward; a Route sends
`latestRevision` traffic to that revision, so a new revision takes traffic only once it is Ready.
"""

from __future__ import annotations

from typing import Any

from ..kube import ALL
from ..manifest import missing_command
from .caches import Caches
from .events import EventRecorder
from .names import (
    L_CONFIGURATION_GENERATION,
    condition,
    conditions,
    controlled_by,
    is_true,
    meta,
)
from .resources import initial_replicas, make_configuration, make_deployment, make_pa, make_revision, make_route
from .writer import Writer

__all__ = ["ServingReconciler"]


def _generation(rev: dict[str, Any]) -> int:
    try:
        return int((meta(rev).get("labels") or {}).get(L_CONFIGURATION_GENERATION, "0"))
    except ValueError:
        return 0


class ServingReconciler:
    def __init__(
        self,
        caches: Caches,
        writer: Writer,
        domain: str,
        features: dict[str, str] | None = None,
        events: EventRecorder | None = None,
        initial_scale: int = 1,
    ) -> None:
        self.c = caches
        self.w = writer
        self.events = events or EventRecorder(writer.kube, "controller")
        self.domain = domain
        self.features = features or {}
        # config-autoscaler `initial-scale`: a new Deployment's replicas unless the revision's
        # annotation says otherwise (Knative's resources/deploy.go).
        self.initial_scale = initial_scale

    async def reconcile(self) -> None:
        for ksvc in self.c.ksvcs.items():
            await self._service(ksvc)
        for cfg in self.c.configurations.items():
            await self._configuration(cfg)
        reach = self._reachability()
        for rev in self.c.revisions.items():
            await self._revision(rev, reach)
        for route in self.c.routes.items():
            await self._route_status(route)
        for ksvc in self.c.ksvcs.items():
            await self._service_status(ksvc)

    # ---- Service -------------------------------------------------------------------------

    async def _service(self, ksvc: dict[str, Any]) -> None:
        if meta(ksvc).get("deletionTimestamp"):
            return
        ns, name = meta(ksvc).get("namespace", "default"), meta(ksvc)["name"]
        for gvr, informer, desired, kind in (
            (ALL.CONFIGURATIONS, self.c.configurations, make_configuration(ksvc), "Configuration"),
            (ALL.ROUTES, self.c.routes, make_route(ksvc), "Route"),
        ):
            new = informer.get(ns, name) is None
            if await self.w.ensure(gvr, informer, desired) is not None and new:
                await self.events.event(ksvc, "Normal", "Created", f'Created {kind} "{name}"')

    def url(self, name: str, namespace: str) -> str:
        return f"http://{name}.{namespace}.{self.domain}"

    async def _service_status(self, ksvc: dict[str, Any]) -> None:
        m = meta(ksvc)
        ns, name = m.get("namespace", "default"), m["name"]
        cfg = self.c.configurations.get(ns, name)
        route = self.c.routes.get(ns, name)
        cfg_status = (cfg or {}).get("status") or {}
        route_status = (route or {}).get("status") or {}
        cfg_ok = (
            cfg is not None
            and is_true(cfg, "Ready")
            and cfg_status.get("observedGeneration") == meta(cfg).get("generation")
        )
        route_ok = route is not None and is_true(route, "Ready")
        cfg_msg = ((condition(cfg, "Ready") if cfg else None) or {}).get("message", "")
        route_msg = ((condition(route, "Ready") if route else None) or {}).get("message", "")
        failed = cfg is not None and (condition(cfg, "Ready") or {}).get("status") == "False"

        def st(ok: bool) -> str:
            return "True" if ok else ("False" if failed else "Unknown")

        # Knative: a failed latest revision makes the Service RevisionFailed, with its message.
        not_ready = "RevisionFailed" if failed else "RevisionNotReady"
        await self.events.on_change(
            ksvc, "failed", (str(failed), cfg_msg), "Warning", "RevisionFailed" if failed else "", cfg_msg
        )

        status: dict[str, Any] = {
            "observedGeneration": m.get("generation", 1),
            "url": self.url(name, ns),
            "address": {"url": f"http://{name}.{ns}.svc.cluster.local"},
            "latestCreatedRevisionName": cfg_status.get("latestCreatedRevisionName", ""),
            "latestReadyRevisionName": cfg_status.get("latestReadyRevisionName", ""),
            "traffic": route_status.get("traffic") or [],
            "conditions": conditions(
                ksvc,
                [
                    (
                        "ConfigurationsReady",
                        st(cfg_ok),
                        "" if cfg_ok else not_ready,
                        "" if cfg_ok else cfg_msg,
                    ),
                    (
                        "Ready",
                        st(cfg_ok and route_ok),
                        "" if cfg_ok and route_ok else ("RevisionFailed" if failed else "NotReady"),
                        "" if cfg_ok and route_ok else (cfg_msg or route_msg),
                    ),
                    (
                        "RoutesReady",
                        "True" if route_ok else "Unknown",
                        "" if route_ok else "TrafficNotAssigned",
                        "" if route_ok else route_msg,
                    ),
                ],
            ),
        }
        await self.w.status(ALL.SERVICES, self.c.ksvcs, ksvc, status)

    # ---- Configuration -------------------------------------------------------------------

    def _revisions_of(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        ns = meta(cfg).get("namespace", "default")
        return [r for r in self.c.in_namespace(self.c.revisions, ns) if controlled_by(r, cfg)]

    async def _configuration(self, cfg: dict[str, Any]) -> None:
        m = meta(cfg)
        if m.get("deletionTimestamp"):
            return
        ns = m.get("namespace", "default")
        desired = make_revision(cfg)
        name = meta(desired)["name"]
        # Revisions are immutable snapshots: created once, never patched.
        if (
            self.c.revisions.get(ns, name) is None
            and await self.w.ensure(ALL.REVISIONS, self.c.revisions, desired) is not None
        ):
            await self.events.event(cfg, "Normal", "Created", f'Created Revision "{name}"')
        revs = self._revisions_of(cfg)
        latest = self.c.revisions.get(ns, name)
        old = (cfg.get("status") or {}).get("latestReadyRevisionName", "")
        old_rev = self.c.revisions.get(ns, old) if old else None
        ready = [r for r in revs if is_true(r, "Ready")]
        best = max(ready, key=_generation, default=None)
        if old_rev is not None and (best is None or _generation(old_rev) > _generation(best)):
            best = old_rev
        latest_ready = meta(best)["name"] if best is not None else ""
        latest_cond = condition(latest, "Ready") if latest is not None else None
        if latest is not None and is_true(latest, "Ready"):
            ready_cond = ("Ready", "True", "", "")
        elif latest_cond is not None and latest_cond.get("status") == "False":
            ready_cond = (
                "Ready",
                "False",
                "RevisionFailed",
                f"Revision {name!r} failed with message: {latest_cond.get('message', '')}.",
            )
        else:
            ready_cond = ("Ready", "Unknown", "", "")
        if latest_ready:
            await self.events.on_change(
                cfg,
                "latestReady",
                (latest_ready,),
                "Normal",
                "LatestReadyUpdate",
                f'LatestReadyRevisionName updated to "{latest_ready}"',
            )
        failed = ready_cond[1] == "False"
        await self.events.on_change(
            cfg,
            "failed",
            (name, str(failed)),
            "Warning",
            "LatestCreatedFailed" if failed else "",
            f'Latest created revision "{name}" has failed',
        )
        status = {
            "observedGeneration": m.get("generation", 1),
            "latestCreatedRevisionName": name if latest is not None else "",
            "latestReadyRevisionName": latest_ready,
            "conditions": conditions(cfg, [ready_cond]),
        }
        await self.w.status(ALL.CONFIGURATIONS, self.c.configurations, cfg, status)

    # ---- Revision --------------------------------------------------------------------------

    def _reachability(self) -> dict[tuple[str, str], str]:
        """PA `spec.reachability` per revision, from the routes (Knative's routingState):
        routed → Reachable; pending (newest of its configuration, or named by a route spec but
        not yet routed) → "" (unknown); anything else → Unreachable."""
        out: dict[tuple[str, str], str] = {}
        for cfg in self.c.configurations.items():
            ns = meta(cfg).get("namespace", "default")
            latest = (cfg.get("status") or {}).get("latestCreatedRevisionName")
            if latest:
                out[(ns, latest)] = ""
        for route in self.c.routes.items():
            ns = meta(route).get("namespace", "default")
            for t in (route.get("spec") or {}).get("traffic") or ():
                if t.get("revisionName"):
                    out.setdefault((ns, t["revisionName"]), "")
            for t in (route.get("status") or {}).get("traffic") or ():
                if t.get("revisionName") and (t.get("percent") or t.get("tag")):
                    out[(ns, t["revisionName"])] = "Reachable"
        return out

    async def _revision(self, rev: dict[str, Any], reach: dict[tuple[str, str], str]) -> None:
        m = meta(rev)
        if m.get("deletionTimestamp"):
            return
        ns, name = m.get("namespace", "default"), m["name"]
        missing = self._missing_command(rev)
        if missing:
            # Nothing to run: no Deployment, and the reason where `kubectl get ksvc` shows it.
            await self._revision_status(rev, ("ContainerMissing", missing))
            return
        dep = make_deployment(rev, initial_replicas(rev, self.initial_scale), self.features)
        await self.w.ensure(ALL.DEPLOYMENTS, self.c.deployments, dep, create_only=("replicas",))
        pa = make_pa(rev, reach.get((ns, name), "Unreachable"))
        await self.w.ensure(ALL.PODAUTOSCALERS, self.c.pas, pa)
        await self._revision_status(rev)

    @staticmethod
    def _missing_command(rev: dict[str, Any]) -> str:
        """An image-only container: `sluice local` runs commands, it pulls no images (the same
        message `sluice local apply` gives for the manifest)."""
        for i, c in enumerate((rev.get("spec") or {}).get("containers") or ()):
            if not c.get("command"):
                return f"spec.containers[{i}].command: {missing_command(str(c.get('image', '')))}"
        return ""

    def _crash_message(self, rev: dict[str, Any]) -> tuple[str, str] | None:
        """(reason, message) of a user container that keeps failing, from the pod statuses the
        kubelet writes (Knative reports `ExitCode<N>` / `Container failed with: ...`)."""
        ns, name = meta(rev).get("namespace", "default"), meta(rev)["name"]
        for pod in self.c.in_namespace(self.c.pods, ns):
            if (meta(pod).get("labels") or {}).get("serving.knative.dev/revision") != name:
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or ():
                term = (cs.get("lastState") or {}).get("terminated")
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if term and waiting.get("reason") == "CrashLoopBackOff":
                    return f"ExitCode{term.get('exitCode', 1)}", f"Container failed with: {term.get('message', '')}"
        return None

    async def _revision_status(self, rev: dict[str, Any], failure: tuple[str, str] | None = None) -> None:
        m = meta(rev)
        ns, name = m.get("namespace", "default"), m["name"]
        pa = self.c.pas.get(ns, name)
        pa_status = (pa or {}).get("status") or {}
        initialized = failure is None and pa is not None and is_true(pa, "ScaleTargetInitialized")
        was_ready = failure is None and is_true(rev, "Ready")
        crash = failure or (None if initialized or was_ready else self._crash_message(rev))
        if initialized or was_ready:
            resources = ("ResourcesAvailable", "True", "", "")
            healthy = ("ContainerHealthy", "True", "", "")
            ready = ("Ready", "True", "", "")
        elif crash is not None:
            resources = ("ResourcesAvailable", "Unknown", "Deploying", "")
            healthy = ("ContainerHealthy", "False", crash[0], crash[1])
            ready = ("Ready", "False", crash[0], crash[1])
        else:
            resources = ("ResourcesAvailable", "Unknown", "Deploying", "")
            healthy = ("ContainerHealthy", "Unknown", "Deploying", "")
            ready = ("Ready", "Unknown", "Deploying", "")
        active = condition(pa, "Active") if pa is not None else None
        act = (
            "Active",
            (active or {}).get("status", "Unknown"),
            (active or {}).get("reason", ""),
            (active or {}).get("message", ""),
        )
        status: dict[str, Any] = {
            "observedGeneration": m.get("generation", 1),
            "conditions": conditions(rev, [act, healthy, ready, resources]),
            "actualReplicas": int(pa_status.get("actualScale") or 0),
            "desiredReplicas": int(pa_status.get("desiredScale") or 0),
            "containerStatuses": [
                {"name": c.get("name", "user-container")} for c in (rev.get("spec") or {}).get("containers") or ()
            ],
        }
        if pa_status.get("serviceName"):
            status["serviceName"] = pa_status["serviceName"]
        await self.events.on_change(
            rev,
            "ready",
            ready[1:],
            "Warning" if ready[1] == "False" else "",
            ready[2] if ready[1] == "False" else "",
            ready[3],
        )
        await self.w.status(ALL.REVISIONS, self.c.revisions, rev, status)

    # ---- Route -------------------------------------------------------------------------------

    def route_targets(self, route: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """Resolved `status.traffic` and a message naming what is not ready yet."""
        ns = meta(route).get("namespace", "default")
        out: list[dict[str, Any]] = []
        missing = ""
        for t in (route.get("spec") or {}).get("traffic") or ():
            rev_name = t.get("revisionName", "")
            if not rev_name and t.get("configurationName"):
                cfg = self.c.configurations.get(ns, t["configurationName"])
                rev_name = ((cfg or {}).get("status") or {}).get("latestReadyRevisionName", "")
                if not rev_name:
                    missing = f"Configuration {t['configurationName']!r} does not have any ready Revision."
                    continue
            elif not is_true(self.c.revisions.get(ns, rev_name), "Ready"):
                missing = f"Revision {rev_name!r} is not ready."
                continue
            entry: dict[str, Any] = {"revisionName": rev_name, "percent": int(t.get("percent", 0) or 0)}
            if t.get("latestRevision"):
                entry["latestRevision"] = True
                entry["configurationName"] = t.get("configurationName", "")
            if t.get("tag"):
                entry["tag"] = t["tag"]
                entry["url"] = self.url(f"{t['tag']}-{meta(route)['name']}", ns)
            out.append(entry)
        return out, missing

    async def _route_status(self, route: dict[str, Any]) -> None:
        m = meta(route)
        ns, name = m.get("namespace", "default"), m["name"]
        traffic, missing = self.route_targets(route)
        ok = not missing
        old_traffic = (route.get("status") or {}).get("traffic") or []
        if not ok and old_traffic:
            traffic = old_traffic  # keep serving the previous assignment while a target is pending
        status: dict[str, Any] = {
            "observedGeneration": m.get("generation", 1),
            "url": self.url(name, ns),
            "address": {"url": f"http://{name}.{ns}.svc.cluster.local"},
            "traffic": traffic,
            "conditions": conditions(
                route,
                [
                    ("AllTrafficAssigned", "True" if ok else "Unknown", "" if ok else "RevisionMissing", missing),
                    ("IngressReady", "True", "", ""),
                    ("Ready", "True" if ok else "Unknown", "" if ok else "RevisionMissing", missing),
                ],
            ),
        }
        await self.w.status(ALL.ROUTES, self.c.routes, route, status)
