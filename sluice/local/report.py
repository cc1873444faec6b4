"""`sluice local report`: a PNG that tells what the data plane did, from `samples.jsonl`.

Three panels over time, one line per Revision (so a traffic split shows as two lines):
requests/s (each revision's pods' Stats; the Service's total at the ingress dotted), concurrency
per ready pod against the autoscaler's target (target × utilization, CONTRACT.md §4.6), and pods
(desired as a wide pale band, ready as a thin line on top, so neither hides the other). Marked on
every panel: panic mode (red shading), scale from zero (blue shading from the first demand with no
pod to the first ready pod, with its duration), phases (given by the caller, e.g. the demo, else
derived: idle / scale from zero / traffic / cool down), and a Service that is not Ready (a red
hatched band and "never became ready: reason").

matplotlib is imported lazily (an optional extra); without it a plain PNG with the same three
panels (lines only, no text) is drawn with the stdlib, and the legend is printed.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["History", "ReportError", "build_figure", "derive_phases", "load_history", "write_report"]

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194))
PANIC_COLOUR = "#d62728"
COLD_COLOUR = "#1f77b4"
NAN = math.nan


class ReportError(Exception):
    pass


@dataclass
class RevisionSeries:
    service: str
    name: str
    t: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    concurrency: list[float] = field(default_factory=list)
    ready_pods: list[float] = field(default_factory=list)
    desired: list[float] = field(default_factory=list)
    panic: list[bool] = field(default_factory=list)
    traffic: int = 0
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.traffic}%)" if self.traffic else self.name


@dataclass
class ServiceSeries:
    key: str
    t: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    in_flight: list[float] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    reason: str = ""
    message: str = ""


@dataclass
class History:
    start: float
    end: float
    samples: int
    services: dict[str, ServiceSeries]
    revisions: dict[tuple[str, str], RevisionSeries]


def _num(value: Any) -> float:
    return NAN if value is None else float(value)


def load_history(path: Path) -> History:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        raise ReportError(f"no samples at {path}: run `sluice local up` and send some traffic first") from None
    services: dict[str, ServiceSeries] = {}
    revisions: dict[tuple[str, str], RevisionSeries] = {}
    t0: float | None = None
    t_end = 0.0
    n = 0
    for line in lines:
        try:
            sample = json.loads(line)
            t_abs = float(sample["t"])
        except (ValueError, KeyError, TypeError):
            continue
        n += 1
        t0 = t_abs if t0 is None else t0
        t_end = t_abs
        t = t_abs - t0
        for key, values in (sample.get("services") or {}).items():
            svc = services.setdefault(key, ServiceSeries(key))
            svc.t.append(t)
            svc.rps.append(float(values.get("rps") or 0))
            svc.in_flight.append(float(values.get("in_flight") or 0))
            svc.ready.append(str(values.get("ready", "Unknown")))
            if values.get("ready") != "True" and (values.get("reason") or values.get("message")):
                svc.reason, svc.message = str(values.get("reason") or ""), str(values.get("message") or "")
            # Samples written before per-revision data existed: the Service stands in for it.
            revs = values.get("revisions")
            if revs is None:
                revs = {key.split("/")[-1]: values | {"concurrency": values.get("in_flight"), "desired": None}}
            for rname, r in revs.items():
                rev = revisions.setdefault((key, rname), RevisionSeries(key, rname))
                rev.t.append(t)
                rev.rps.append(float(r.get("rps") or 0))
                rev.concurrency.append(float(r.get("concurrency") or 0))
                rev.ready_pods.append(float(r.get("ready_pods") or 0))
                rev.desired.append(_num(r.get("desired")))
                rev.panic.append(bool(r.get("panic")))
                rev.traffic = int(r.get("traffic") or 0)
                rev.target = dict(r.get("target") or rev.target)
    if n == 0 or t0 is None:
        raise ReportError(f"{path} holds no samples yet")
    return History(t0, t_end, n, services, revisions)


# ---- what to mark ------------------------------------------------------------------------------


def _spans(ts: list[float], flags: list[bool], step: float = 1.0) -> list[tuple[float, float]]:
    """(start, end) of each run of True; a run ends at the next sample (or one step on)."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for i, (t, on) in enumerate(zip(ts, flags, strict=True)):
        if on and start is None:
            start = t
        if not on and start is not None:
            out.append((start, t))
            start = None
        if on and i == len(ts) - 1 and start is not None:
            out.append((start, t + step))
    return out


def cold_starts(h: History) -> list[tuple[str, float, float]]:
    """(revision, start, end) of each scale from zero: a revision going from no ready pod to one,
    either after it had pods before (it had scaled to zero) or with demand in the meantime
    (desired ≥ 1 after it was 0, or requests in flight at the ingress for its Service); from the first sample
    with demand (else the sample before the pod) to the first sample with a ready pod. Samples are
    one a second, so a sub-second cold start shows as one sample wide."""
    out = []
    for rev in h.revisions.values():
        svc = h.services.get(rev.service)
        in_flight = dict(zip(svc.t, svc.in_flight, strict=True)) if svc else {}
        had_pods = was_zero = False
        demand_since: float | None = None
        for i, (t, pods, d) in enumerate(zip(rev.t, rev.ready_pods, rev.desired, strict=True)):
            if pods > 0:
                if i > 0 and rev.ready_pods[i - 1] == 0 and (had_pods or demand_since is not None):
                    out.append((rev.name, demand_since if demand_since is not None else rev.t[i - 1], t))
                had_pods, demand_since = True, None
                continue
            was_zero = was_zero or d == 0
            # desired ≥ 1 is demand only after the autoscaler had it at 0 (not a new revision's
            # initial scale); a request waiting at the ingress always is.
            if demand_since is None and ((was_zero and d >= 1) or in_flight.get(t, 0) > 0):
                demand_since = t
    return out


def derive_phases(h: History) -> list[tuple[float, str]]:
    """idle (no pod, no traffic) / scale from zero / traffic / cool down (pods, no traffic).

    Requests within 3 s of each other are one traffic phase, and a phase shorter than
    max(3 s, 4 % of the run) is folded into the one before, so the labels stay readable."""
    times = sorted({t for s in h.services.values() for t in s.t})
    if not times:
        return []
    cold = cold_starts(h)
    active = []
    for t in times:
        rps = sum(s.rps[s.t.index(t)] for s in h.services.values() if t in s.t)
        inflight = sum(s.in_flight[s.t.index(t)] for s in h.services.values() if t in s.t)
        active.append(rps > 0 or inflight > 0)
    labels = []
    seen_traffic = False
    for i, t in enumerate(times):
        pods = sum(r.ready_pods[r.t.index(t)] for r in h.revisions.values() if t in r.t)
        window = range(max(0, i - 4), min(len(times), i + 5))
        before = any(active[k] and 0 <= t - times[k] <= 3.0 for k in window)
        after = any(active[k] and 0 <= times[k] - t <= 3.0 for k in window)
        near = active[i] or (before and after)  # a gap of ≤ 3 s between requests stays "traffic"
        if any(a <= t < b for _, a, b in cold):
            labels.append("scale from zero")
        elif near:
            labels.append("traffic")
            seen_traffic = True
        elif pods > 0:
            labels.append("cool down" if seen_traffic else "ready, no traffic")
        else:
            labels.append("idle")
    runs: list[tuple[float, str]] = []
    for t, label in zip(times, labels, strict=True):
        if not runs or runs[-1][1] != label:
            runs.append((t, label))
    min_len = max(3.0, 0.04 * (times[-1] - times[0]))
    kept: list[tuple[float, str]] = []
    for i, (t, label) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else times[-1] + 1.0
        if kept and end - t < min_len and label != "scale from zero":
            continue
        if kept and kept[-1][1] == label:
            continue
        kept.append((t, label))
    return kept


def _failures(h: History) -> list[tuple[str, float, float, str]]:
    """(service, start, end, text) for each span in which a Service was Ready=False."""
    out = []
    for svc in h.services.values():
        spans = _spans(svc.t, [r == "False" for r in svc.ready])
        ever_ready = "True" in svc.ready
        # A crash message repeats the app's output; Knative's wrapper adds nothing at a glance.
        first_line = svc.message.split("\n", 1)[0]
        first_line = re.sub(r"^Revision \S+ failed with message: ", "", first_line)
        why = ": ".join(x for x in (svc.reason, first_line[:110]) if x)
        for start, end in spans:
            what = "failed" if ever_ready else "never became ready"
            out.append((svc.key, start, end, f"{svc.key} {what}" + (f": {why}" if why else "")))
    return out


def _target_per_pod(rev: RevisionSeries) -> tuple[float, str] | None:
    tgt = rev.target
    if not tgt or tgt.get("metric", "concurrency") != "concurrency":
        return None
    value, util = float(tgt.get("value", 0)), float(tgt.get("utilization", 1))
    return value * util, f"{rev.name} target {value:g} × {util * 100:g}% = {value * util:g}/pod"


# ---- drawing -----------------------------------------------------------------------------------


def _rgb(i: int) -> tuple[float, float, float]:
    r, g, b = COLOURS[i % len(COLOURS)]
    return r / 255, g / 255, b / 255


def build_figure(h: History, phases: list[tuple[float, str]] | None = None) -> Any:
    """The matplotlib Figure (for `write_report` and for tests that check what is drawn)."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(12, 9.5))
    ax_rps, ax_conc, ax_pods = axes
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h.start))
    names = ", ".join(h.services) or "no services"
    fig.suptitle(
        f"sluice local: {names}\n{stamp} UTC, {h.end - h.start:.0f} s, {h.samples} samples (one per second)",
        fontsize=12,
    )
    t_max = max(h.end - h.start, 1.0)

    n_revs = len(h.revisions)
    for i, rev in enumerate(h.revisions.values()):
        colour = _rgb(i)
        served = any(rev.rps) or any(rev.concurrency)
        if served:  # a revision that never served adds nothing but legend entries here
            ax_rps.plot(rev.t, rev.rps, color=colour, lw=1.8, label=f"{rev.label}: requests/s at its pods")
            per_pod = [c / p if p > 0 else NAN for c, p in zip(rev.concurrency, rev.ready_pods, strict=True)]
            ax_conc.plot(rev.t, per_pod, color=colour, lw=1.8, label=f"{rev.name}: concurrency per ready pod")
        target = _target_per_pod(rev)
        if target is not None and served:
            ax_conc.axhline(target[0], color=colour, ls=":", lw=1.5, label=target[1])
        # Revisions with equal pod counts would draw on top of each other: a small offset each.
        off = 0.06 * (i - (n_revs - 1) / 2) if n_revs > 1 else 0.0
        desired = [d + off for d in rev.desired]
        ready = [r + off for r in rev.ready_pods]
        ax_pods.step(rev.t, desired, where="post", color=colour, lw=8, alpha=0.3, label=f"{rev.name} desired")
        ax_pods.step(rev.t, ready, where="post", color=colour, lw=1.6, label=f"{rev.name} ready")
    for svc in h.services.values():
        if any(svc.rps) and (len([r for r in h.revisions.values() if r.service == svc.key]) > 1 or len(h.services) > 1):
            ax_rps.plot(svc.t, svc.rps, color="0.35", ls="--", lw=1, label=f"{svc.key}: all requests (ingress)")

    # Marks on every panel; each legend entry once (on the top panel).
    panic_spans = [(a, b) for rev in h.revisions.values() for a, b in _spans(rev.t, rev.panic) if rev.t and rev.panic]
    for j, (a, b) in enumerate(panic_spans):
        for ax in axes:
            label = "panic mode" if ax is ax_rps and j == 0 else None
            ax.axvspan(a, b, color=PANIC_COLOUR, alpha=0.12, lw=0, label=label)
    for j, (rname, a, b) in enumerate(cold_starts(h)):
        for ax in axes:
            label = "scale from zero (no pod yet)" if ax is ax_rps and j == 0 else None
            ax.axvspan(a, b, color=COLD_COLOUR, alpha=0.15, lw=0, label=label)
        ax_pods.annotate(
            f"scale from zero: {rname}\n~{b - a:.0f} s to a ready pod (samples 1 s apart)",
            xy=(b, 1),
            xytext=(12, 28),
            textcoords="offset points",
            fontsize=8,
            color=COLD_COLOUR,
            arrowprops={"arrowstyle": "->", "color": COLD_COLOUR},
        )
    for k, (_svc, a, b, text) in enumerate(_failures(h)):
        ax_pods.axvspan(a, b, ymin=0.93 - 0.09 * k, ymax=1.0 - 0.09 * k, color=PANIC_COLOUR, alpha=0.35, lw=0)
        ax_pods.text(
            a + t_max * 0.005, 0.965 - 0.09 * k, text, transform=ax_pods.get_xaxis_transform(), ha="left",
            va="center", color="white", fontsize=8, fontweight="bold", clip_on=True,
            bbox={"facecolor": PANIC_COLOUR, "edgecolor": "none", "pad": 1.5},
        )  # fmt: skip

    row_ends = [-math.inf] * 3  # where the last label of each row ends, in seconds
    for t, label in phases if phases is not None else derive_phases(h):
        for ax in axes:
            ax.axvline(t, color="0.5", lw=0.8, ls="-")
        # The first row where the label does not overlap the one before (~0.0095 of the axis per
        # character at 9 pt on a 12-inch figure).
        row = next((r for r, end in enumerate(row_ends) if end < t), len(row_ends) - 1)
        row_ends[row] = t + t_max * (0.004 + 0.0095 * len(label))
        ax_rps.text(
            t + t_max * 0.004, 1.01 + 0.09 * row, label, transform=ax_rps.get_xaxis_transform(),
            fontsize=9, va="bottom", fontweight="bold", color="0.25",
        )  # fmt: skip

    ax_rps.set_ylabel("requests/s")
    ax_conc.set_ylabel("concurrency per ready pod")
    ax_pods.set_ylabel("pods" + (" (revisions offset ±0.06)" if n_revs > 1 else ""))
    ax_pods.yaxis.get_major_locator().set_params(integer=True)
    top = max((v for r in h.revisions.values() for v in r.ready_pods + r.desired if not math.isnan(v)), default=1.0)
    ax_pods.set_ylim(-0.3, max(top, 1.0) * 1.25 + 0.5)  # room for the failure bands at the top
    ax_pods.set_xlabel("seconds since the first sample")
    ax_pods.set_xlim(0, t_max)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def write_report(samples: Path, output: Path, phases: list[tuple[float, str]] | None = None) -> int:
    """Writes the PNG; `phases` are (Unix time or seconds since the first sample, label), else derived."""
    h = load_history(samples)
    if phases is not None:
        phases = [(t - h.start if t > 1e9 else t, label) for t, label in phases]
    try:
        import matplotlib  # noqa: F401  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        _write_plain_png(h, output)
        for i, rev in enumerate(h.revisions.values()):
            print(f"  colour {COLOURS[i % len(COLOURS)]}: {rev.service} {rev.label}")
        print("  (install matplotlib for labelled axes, phases and markers)")
        return h.samples
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    fig = build_figure(h, phases)
    fig.savefig(str(output), dpi=100)
    plt.close(fig)
    return h.samples


# ---- stdlib fallback ---------------------------------------------------------------------------


def _write_plain_png(h: History, output: Path, width: int = 900, panel_h: int = 200) -> None:
    panels = ("rps", "concurrency", "ready_pods")
    height = panel_h * len(panels)
    px = bytearray(b"\xff" * (width * height * 3))

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            px[i : i + 3] = bytes(rgb)

    def line(x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int], dashed: bool = False) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            if dashed and (s // 4) % 2:
                continue
            put(x0 + (x1 - x0) * s // steps, y0 + (y1 - y0) * s // steps, rgb)

    t_max = max(h.end - h.start, 1.0)
    margin = 20
    revs = list(h.revisions.values())
    for p, key in enumerate(panels):
        top, bottom = p * panel_h + margin, (p + 1) * panel_h - margin
        line(margin, bottom, width - margin, bottom, (0, 0, 0))
        line(margin, top, margin, bottom, (0, 0, 0))
        keys = (key, "desired") if key == "ready_pods" else (key,)
        values = [v for r in revs for k in keys for v in getattr(r, k) if not math.isnan(v)]
        v_max = max(values, default=1.0) or 1.0
        for i, rev in enumerate(revs):
            rgb = COLOURS[i % len(COLOURS)]
            for k in keys:
                pts = [
                    (margin + int((t / t_max) * (width - 2 * margin)), bottom - int((v / v_max) * (bottom - top)))
                    for t, v in zip(rev.t, getattr(rev, k), strict=True)
                    if not math.isnan(v)
                ]
                for (xa, ya), (xb, yb) in itertools.pairwise(pts):
                    line(xa, ya, xb, yb, rgb, dashed=k == "desired")
    raw = b"".join(b"\x00" + bytes(px[y * width * 3 : (y + 1) * width * 3]) for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    output.write_bytes(png)
