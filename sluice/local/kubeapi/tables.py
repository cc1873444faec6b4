"""`Table` responses (meta.k8s.io/v1): what `kubectl get` prints.

kubectl asks with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io, application/json`, also
on watches (`-w`); the server answers with column definitions and one row of cells per object,
as its printers do: a CRD's `additionalPrinterColumns` (JSONPath, `date` columns shown as an age)
and, for built-in kinds, the columns of kube-apiserver's printers (pods: NAME READY STATUS
RESTARTS AGE, with IP and NODE under `-o wide`). A column with `priority` > 0 is `-o wide` only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .meta import JSONObj
from .resources import ResourceType
from .selectors import selector_to_string

TABLE_API_VERSIONS = ("meta.k8s.io/v1", "meta.k8s.io/v1beta1")


def table_version(accept: str) -> str | None:
    """The Table apiVersion the client asks for first, or None if it wants plain objects."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return f"meta.k8s.io/{params['v']}"
    return None


# ---------------------------------------------------------------- time


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d" if rest == 0 else f"{days}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{years}y" if rest == 0 else f"{years}y{rest}d"
    return f"{years}y"


def age(value: Any, now: datetime | None = None) -> str:
    t = _parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - t).total_seconds())


# ---------------------------------------------------------------- JSONPath (the CRD subset)

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-]+)
      | \[\?\(@\.(?P<fkey>[A-Za-z0-9_\-.]+)\s*==\s*(?P<q>['"])(?P<fval>.*?)(?P=q)\)\]
      | \[(?P<sq>['"])(?P<key>(?:\\.|[^'"\\])*)(?P=sq)\]
      | \[(?P<index>-?\d+)\]
      | \[\*\]
      | \.\*""",
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values of a kubectl-style JSONPath (`.status.conditions[?(@.type=='Ready')].status`,
    `.metadata.labels['serving\\.knative\\.dev/configuration']`)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    current = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for v in current:
            if m.group("field") is not None:
                if isinstance(v, dict) and m.group("field") in v:
                    nxt.append(v[m.group("field")])
            elif m.group("fkey") is not None:
                for item in v if isinstance(v, list) else ():
                    got = item
                    for part in m.group("fkey").split("."):
                        got = got.get(part) if isinstance(got, dict) else None
                    if got is not None and str(got) == m.group("fval"):
                        nxt.append(item)
            elif m.group("key") is not None:
                key = re.sub(r"\\(.)", r"\1", m.group("key"))
                if isinstance(v, dict) and key in v:
                    nxt.append(v[key])
            elif m.group("index") is not None:
                i = int(m.group("index"))
                if isinstance(v, list) and -len(v) <= i < len(v):
                    nxt.append(v[i])
            else:
                nxt.extend(v.values() if isinstance(v, dict) else v if isinstance(v, list) else ())
        current = nxt
    return current


# ---------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


NAME = Column("Name", "string", "name", "Name must be unique within a namespace.")
AGE = Column(
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)

Cells = Callable[[JSONObj, datetime], list[Any]]


def _meta(obj: JSONObj) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _age(obj: JSONObj, now: datetime) -> str:
    return age(_meta(obj).get("creationTimestamp"), now)


def _pod_status(pod: JSONObj) -> str:
    """kubectl's printPod reason: phase, then a container's waiting/terminated reason."""
    status = pod.get("status") or {}
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    ready_running = False
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode', 0)}"
        elif "running" in state and cs.get("ready"):
            ready_running = True
    if reason == "Completed" and ready_running:
        reason = "Running"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_cells(pod: JSONObj, now: datetime) -> list[Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    last = max(
        (
            t
            for cs in statuses
            if (t := _parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")))
        ),
        default=None,
    )
    restart_cell = f"{restarts} ({human_duration((now - last).total_seconds())} ago)" if restarts and last else restarts
    spec = pod.get("spec") or {}
    gates = spec.get("readinessGates") or []
    return [
        _meta(pod).get("name", ""),
        f"{ready}/{total}",
        _pod_status(pod),
        restart_cell,
        _age(pod, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{len(gates)}" if gates else "<none>",
    ]


def _workload_wide(spec: dict[str, Any]) -> list[str]:
    """The `-o wide` cells of deployments and replica sets: containers, images, selector."""
    cs = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        ",".join(c.get("name", "") for c in cs),
        ",".join(c.get("image", "") for c in cs),
        selector_to_string(spec.get("selector")) or "<none>",
    ]


def _deployment_cells(d: JSONObj, now: datetime) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return [
        _meta(d).get("name", ""),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(d, now),
        *_workload_wide(spec),
    ]


def _replicaset_cells(rs: JSONObj, now: datetime) -> list[Any]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    return [
        _meta(rs).get("name", ""),
        int(spec.get("replicas") or 0),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _age(rs, now),
        *_workload_wide(spec),
    ]


def _service_cells(svc: JSONObj, now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    ports = []
    for p in spec.get("ports") or ():
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    external = spec.get("externalName") or ",".join(spec.get("externalIPs") or []) or "<none>"
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        _meta(svc).get("name", ""),
        spec.get("type") or "ClusterIP",
        spec.get("clusterIP") or "<none>",
        external,
        ",".join(ports) or "<none>",
        _age(svc, now),
        selector or "<none>",
    ]


def _endpoints_cells(ep: JSONObj, now: datetime) -> list[Any]:
    addrs = []
    for subset in ep.get("subsets") or ():
        for a in subset.get("addresses") or ():
            for p in subset.get("ports") or [{}]:
                addrs.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else str(a.get("ip")))
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_meta(ep).get("name", ""), shown or "<none>", _age(ep, now)]


def _event_cells(ev: JSONObj, now: datetime) -> list[Any]:
    # Core events, or their events.k8s.io/v1 view (regarding, note, deprecated* fields).
    io = ev.get("involvedObject") or ev.get("regarding") or {}
    last = ev.get("lastTimestamp") or ev.get("deprecatedLastTimestamp") or ev.get("eventTime")
    first = ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp") or ev.get("eventTime") or last
    count = int(ev.get("count") or ev.get("deprecatedCount") or 1)
    last_seen = age(last, now)
    if count > 1:
        last_seen = f"{last_seen} (x{count} over {age(first, now)})"
    source = ev.get("source") or ev.get("deprecatedSource") or {}
    src = ", ".join(x for x in (source.get("component", ""), source.get("host", "")) if x)
    return [
        last_seen,
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}",
        io.get("fieldPath", ""),
        src or ev.get("reportingComponent") or ev.get("reportingController", ""),
        (ev.get("message") or ev.get("note") or "").strip(),
        age(first, now),
        count,
        _meta(ev).get("name", ""),
    ]


def _wide(*cols: tuple[str, str]) -> list[Column]:
    return [Column(name, "string", "", desc, 1) for name, desc in cols]


WORKLOAD_WIDE = _wide(
    ("Containers", "Names of each container in the template."),
    ("Images", "Images referenced by each container in the template."),
    ("Selector", "Label selector for pods."),
)

BUILTIN: dict[tuple[str, str], tuple[list[Column], Cells]] = {
    ("", "pods"): (
        [
            NAME,
            Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
            Column("Status", description="The aggregate status of the containers in this pod."),
            Column("Restarts", description="The number of times the containers in this pod have been restarted."),
            AGE,
            *_wide(
                ("IP", "IP address allocated to the pod."),
                ("Node", "Name of the node the pod is assigned to."),
                ("Nominated Node", "Name of the node the pod is nominated to."),
                ("Readiness Gates", "The readiness gates of the pod."),
            ),
        ],
        _pod_cells,
    ),
    ("apps", "deployments"): (
        [
            NAME,
            Column("Ready", description="Number of the pod with ready state."),
            Column("Up-to-date", "integer", description="Total number of non-terminated pods targeted."),
            Column("Available", "integer", description="Total number of available pods."),
            AGE,
            *WORKLOAD_WIDE,
        ],
        _deployment_cells,
    ),
    ("apps", "replicasets"): (
        [
            NAME,
            Column("Desired", "integer", description="Number of desired pods."),
            Column("Current", "integer", description="Number of actual replicas."),
            Column("Ready", "integer", description="Number of ready replicas."),
            AGE,
            *WORKLOAD_WIDE,
        ],
        _replicaset_cells,
    ),
    ("", "services"): (
        [
            NAME,
            Column("Type", description="The type of the service."),
            Column("Cluster-IP", description="The cluster IP of the service."),
            Column("External-IP", description="The external IP of the service."),
            Column("Port(s)", description="The ports exposed by the service."),
            AGE,
            *_wide(("Selector", "Route service traffic to pods with label keys and values matching this selector.")),
        ],
        _service_cells,
    ),
    ("", "endpoints"): (
        [NAME, Column("Endpoints", description="Endpoints of the service."), AGE],
        _endpoints_cells,
    ),
    ("", "events"): (
        [
            Column("Last Seen", description="Time when this event was last observed."),
            Column("Type", description="Type of this event (Normal, Warning)."),
            Column("Reason", description="Why the action was taken."),
            Column("Object", description="The object this event is about."),
            *_wide(
                ("Subobject", "The part of the object this event is about (a container)."),
                ("Source", "The component reporting this event."),
            ),
            Column("Message", description="A description of the status of this operation."),
            *_wide(
                ("First Seen", "Time when this event was first observed."),
                ("Count", "The number of times this event has occurred."),
                ("Name", "Name of the event."),
            ),
        ],
        _event_cells,
    ),
    ("", "namespaces"): (
        [NAME, Column("Status", description="The status of the namespace."), AGE],
        lambda ns, now: [_meta(ns).get("name", ""), (ns.get("status") or {}).get("phase", ""), _age(ns, now)],
    ),
    ("", "configmaps"): (
        [NAME, Column("Data", "integer", description="Number of data entries."), AGE],
        lambda cm, now: [
            _meta(cm).get("name", ""),
            len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            _age(cm, now),
        ],
    ),
    ("", "secrets"): (
        [NAME, Column("Type", description="The type of the secret."), Column("Data", "integer"), AGE],
        lambda s, now: [_meta(s).get("name", ""), s.get("type", "Opaque"), len(s.get("data") or {}), _age(s, now)],
    ),
}


def _crd_columns(rt: ResourceType) -> tuple[list[Column], Cells]:
    specs = rt.printer_columns or ({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},)
    cols = [NAME] + [
        Column(
            str(c.get("name", "")),
            "string" if c.get("type") == "date" else str(c.get("type", "string")),
            str(c.get("format", "")),
            str(c.get("description", "")),
            int(c.get("priority") or 0),
        )
        for c in specs
    ]

    def cells(obj: JSONObj, now: datetime) -> list[Any]:
        out: list[Any] = [_meta(obj).get("name", "")]
        for c in specs:
            values = jsonpath(obj, str(c.get("jsonPath", "")))
            if not values:
                out.append(None)
            elif c.get("type") == "date":
                out.append(age(values[0], now))
            elif c.get("type") in ("integer", "number", "boolean"):
                out.append(values[0])
            else:
                out.append(" ".join(v if isinstance(v, str) else str(v) for v in values))
        return out

    return cols, cells


def columns_for(rt: ResourceType) -> tuple[list[Column], Cells]:
    if rt.custom:
        return _crd_columns(rt)
    found = BUILTIN.get(rt.view_of or (rt.group, rt.plural))
    if found is not None:
        return found
    return [NAME, AGE], lambda obj, now: [_meta(obj).get("name", ""), _age(obj, now)]


def _row_object(obj: JSONObj, include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def table(
    rt: ResourceType,
    objects: list[JSONObj],
    api_version: str,
    list_meta: dict[str, Any],
    include_object: str = "PartialObjectMetadata",
    no_headers: bool = False,
) -> dict[str, Any]:
    cols, cells = columns_for(rt)
    now = datetime.now(UTC)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj, now)}
        ro = _row_object(obj, include_object)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": api_version, "metadata": list_meta}
    if not no_headers:
        out["columnDefinitions"] = [c.definition() for c in cols]
    out["rows"] = rows
    return out
