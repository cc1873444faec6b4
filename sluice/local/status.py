"""Rendering `sluice local status` from the supervisor's `status.json` snapshot."""

from __future__ import annotations

from typing import Any

__all__ = ["path_prefix", "render_status", "table", "tag_lines"]


def table(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def path_prefix(namespace: str, name: str) -> str:
    """The ingress's path prefix for a route (or `<tag>-<route>`): `/name/`, or `/ns/name/`."""
    return f"/{name}/" if namespace == "default" else f"/{namespace}/{name}/"


def tag_lines(svc: dict[str, Any], base: str, indent: str = "  ") -> list[str]:
    """One line per tag: its URL (with the ingress port) and the two forms that work without DNS."""
    out = []
    for t in svc.get("traffic") or ():
        if not t.get("tag"):
            continue
        host = str(t.get("url", "")).removeprefix("http://").split("/")[0].rsplit(":", 1)[0]
        prefix = path_prefix(svc["namespace"], f"{t['tag']}-{svc['name']}")
        out.append(
            f"{indent}tag {t['tag']} → {t.get('revisionName', '')}: {t.get('url', '')}   "
            f"curl -H 'Host: {host}' {base}/   or   curl {base}{prefix}"
        )
    return out


def render_status(snap: dict[str, Any]) -> str:
    services = snap.get("services") or []
    base = snap.get("ingress", "?")
    lines = [f"ingress {base}   logs {snap.get('logs', '?')}"]
    if not services:
        lines.append("no services (apply one with `sluice local apply -f FILE`)")
        return "\n".join(lines)
    for svc in services:
        lines.append("")
        rows = [["SERVICE", "URL", "READY", "REQUESTS", "IN-FLIGHT", "5XX"]]
        rows.append(
            [
                f"{svc['namespace']}/{svc['name']}",
                svc.get("url", ""),
                svc.get("ready", "?"),
                str(svc.get("requests", 0)),
                str(svc.get("in_flight", 0)),
                str(svc.get("errors_5xx", 0)),
            ]
        )
        lines += table(rows)
        if svc.get("curl"):
            lines.append(f"  {svc['curl']}    or    curl {svc.get('path_url', '')}")
        lines += tag_lines(svc, base)
        if svc.get("message") and svc.get("ready") != "True":
            lines.append(f"  ! {svc['message']}")
        rrows = [["REVISION", "TRAFFIC", "TAGS", "READY", "PODS(ready/desired)", "SKS", "PANIC", "QUEUE"]]
        for rev in svc.get("revisions") or []:
            desired = rev.get("desired")
            rrows.append(
                [
                    rev["name"],
                    f"{rev.get('traffic', 0)}%",
                    ",".join(rev.get("tags") or ()) or "-",
                    rev.get("ready", "?"),
                    f"{rev.get('ready_pods', 0)}/{'-' if desired is None or desired < 0 else desired}",
                    rev.get("mode", "") or "-",
                    "yes" if rev.get("panic") else "no",
                    str(rev.get("queue_depth", 0)),
                ]
            )
        lines += table(rrows, "  ")
        for rev in svc.get("revisions") or []:
            if rev.get("ready") == "False" and rev.get("message"):
                lines.append(f"  ! {rev['name']}: {rev['message'][:400]}")
            for pod in rev.get("pods") or []:
                flags = [pod.get("phase", "")]
                if pod.get("ready"):
                    flags.append("ready")
                if pod.get("restarts"):
                    flags.append(f"restarts={pod['restarts']}")
                if pod.get("waiting"):
                    flags.append(str(pod["waiting"]))
                lines.append(f"    pod {pod['name']} {pod.get('ip', '')} {' '.join(flags)}")
                if pod.get("message"):
                    lines.append(f"      ! {pod['message']}")
                if pod.get("waiting") in ("CrashLoopBackOff", "RunContainerError") and pod.get("last_exit"):
                    last = pod["last_exit"]
                    lines.append(f"      last exit code {last.get('code')}; output:")
                    lines += [f"        {ln}" for ln in str(last.get("output", "")).splitlines()[-8:]]
                    if pod.get("waiting_message"):
                        lines.append(f"      {pod['waiting_message']}")
    return "\n".join(lines)
