"""Rendering `sluice local status` from the supervisor's `status.json` snapshot."""

from __future__ import annotations

from typing import Any

__all__ = ["render_status"]


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_status(snap: dict[str, Any]) -> str:
    services = snap.get("services") or []
    lines = [f"ingress {snap.get('ingress', '?')}   logs {snap.get('logs', '?')}"]
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
        lines += _table(rows)
        if svc.get("message") and svc.get("ready") != "True":
            lines.append(f"  ! {svc['message']}")
        rrows = [["REVISION", "TRAFFIC", "READY", "PODS(ready/desired)", "SKS", "PANIC", "QUEUE"]]
        for rev in svc.get("revisions") or []:
            desired = rev.get("desired")
            rrows.append(
                [
                    rev["name"],
                    f"{rev.get('traffic', 0)}%",
                    rev.get("ready", "?"),
                    f"{rev.get('ready_pods', 0)}/{'-' if desired is None or desired < 0 else desired}",
                    rev.get("mode", "") or "-",
                    "yes" if rev.get("panic") else "no",
                    str(rev.get("queue_depth", 0)),
                ]
            )
        lines += _table(rrows, "  ")
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
