"""kn-style views of a running instance, from its `status.json` snapshot (refreshed every second):
`service list` (kn's NAME URL LATEST AGE CONDITIONS READY REASON), `service describe`, and
`revision list` (kn's NAME SERVICE TRAFFIC TAGS GENERATION AGE CONDITIONS READY REASON)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..status import path_prefix, table, tag_lines

__all__ = ["age", "describe_service", "find_service", "list_revisions", "list_services"]


def age(stamp: str, now: float | None = None) -> str:
    """kubectl's short age (45s, 3m, 2h, 5d) of an RFC 3339 time; "" if unknown."""
    if not stamp:
        return ""
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return ""
    secs = max(0, int((time.time() if now is None else now) - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _conditions(conds: list[dict[str, Any]]) -> str:
    ok = sum(1 for c in conds if c.get("status") == "True")
    return f"{ok} OK / {len(conds)}" if conds else "-"


def find_service(snap: dict[str, Any], name: str, namespace: str) -> dict[str, Any] | None:
    for svc in snap.get("services") or ():
        if svc.get("name") == name and svc.get("namespace") == namespace:
            found: dict[str, Any] = svc
            return found
    return None


def _in_namespace(snap: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
    return [s for s in snap.get("services") or () if namespace is None or s.get("namespace") == namespace]


def list_services(snap: dict[str, Any], namespace: str | None) -> str:
    services = _in_namespace(snap, namespace)
    if not services:
        return "No services found."
    head = ["NAME", "URL", "LATEST", "AGE", "CONDITIONS", "READY", "REASON"]
    if namespace is None:
        head.insert(0, "NAMESPACE")
    rows = [head]
    for s in services:
        row = [
            s["name"],
            s.get("url", ""),
            s.get("latest_created", ""),
            age(s.get("created", "")),
            _conditions(s.get("conditions") or []),
            s.get("ready", "Unknown"),
            s.get("reason", "") if s.get("ready") != "True" else "",
        ]
        rows.append(([s["namespace"]] if namespace is None else []) + row)
    return "\n".join(table(rows))


def list_revisions(snap: dict[str, Any], namespace: str | None, service: str | None = None) -> str:
    head = ["NAME", "SERVICE", "TRAFFIC", "TAGS", "GENERATION", "AGE", "CONDITIONS", "READY", "REASON"]
    if namespace is None:
        head.insert(0, "NAMESPACE")
    rows = [head]
    for s in _in_namespace(snap, namespace):
        if service is not None and s["name"] != service:
            continue
        # kn lists the newest first.
        for r in sorted(s.get("revisions") or (), key=lambda r: (r.get("generation", 0), r["name"]), reverse=True):
            row = [
                r["name"],
                s["name"],
                f"{r['traffic']}%" if r.get("traffic") else "",
                ",".join(r.get("tags") or ()),
                str(r.get("generation", "")),
                age(r.get("created", "")),
                _conditions(r.get("conditions") or []),
                r.get("ready", "Unknown"),
                r.get("reason", "") if r.get("ready") != "True" else "",
            ]
            rows.append(([s["namespace"]] if namespace is None else []) + row)
    return "No revisions found." if len(rows) == 1 else "\n".join(table(rows))


def describe_service(snap: dict[str, Any], svc: dict[str, Any]) -> str:
    base = str(snap.get("ingress", ""))
    lines = [
        f"Name:       {svc['name']}",
        f"Namespace:  {svc['namespace']}",
        f"Age:        {age(svc.get('created', ''))}",
        f"URL:        {svc.get('url', '')}",
    ]
    if svc.get("curl"):
        lines.append(f"Try:        {svc['curl']}    or    curl {base}{path_prefix(svc['namespace'], svc['name'])}")
    lines += ["", "Revisions:"]
    by_name = {r["name"]: r for r in svc.get("revisions") or ()}
    shown: set[str] = set()
    for t in svc.get("traffic") or ():
        rname = str(t.get("revisionName", ""))
        rev = by_name.get(rname, {})
        label = f"@latest ({rname})" if t.get("latestRevision") else rname
        tag = f" #{t['tag']}" if t.get("tag") else ""
        lines.append(
            f"  {int(t.get('percent') or 0):3d}%  {label}{tag} [{rev.get('generation', '?')}] "
            f"({age(rev.get('created', ''))})"
        )
        if rname not in shown:
            lines += _revision_detail(rev)
            shown.add(rname)
    for rname, rev in by_name.items():
        if rname not in shown:
            lines.append(f"     -  {rname} [{rev.get('generation', '?')}] ({age(rev.get('created', ''))}), no traffic")
            lines += _revision_detail(rev)
    tags = tag_lines(svc, base, indent="  ")
    if tags:
        lines += ["", "Tags:", *tags]
    lines += ["", "Conditions:", "  OK TYPE                    AGE REASON"]
    for c in svc.get("conditions") or ():
        ok = {"True": "++", "False": "!!"}.get(str(c.get("status")), "??")
        reason = c.get("reason", "") + (f": {c['message']}" if c.get("message") and c.get("status") != "True" else "")
        lines.append(f"  {ok} {c.get('type', ''):<23} {age(c.get('lastTransitionTime', '')):>3} {reason}".rstrip())
    return "\n".join(lines)


def _revision_detail(rev: dict[str, Any]) -> list[str]:
    if not rev:
        return []
    desired = rev.get("desired")
    out = [
        f"        Pods:   {rev.get('ready_pods', 0)} ready / {'-' if desired is None else desired} desired"
        f"   SKS {rev.get('mode') or '-'}   panic {'yes' if rev.get('panic') else 'no'}"
        f"   queue {rev.get('queue_depth', 0)}"
    ]
    if rev.get("image"):
        out.insert(0, f"        Image:  {rev['image']}")
    if rev.get("ready") == "False" and rev.get("message"):
        out.append(f"        !! {rev.get('reason', '')}: {rev['message'][:300]}")
    return out
