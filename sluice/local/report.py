"""`sluice local report`: a PNG of requests/s, concurrency (in-flight at the ingress) and pods
(ready and desired) over time, one colour per service, from `samples.jsonl`.

matplotlib is imported lazily (an optional extra); without it a plain PNG with the same three
panels (lines only, no text) is drawn with the stdlib, and the legend is printed.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from pathlib import Path

__all__ = ["ReportError", "load_samples", "write_report"]

PANELS = (
    ("rps", "requests/s"),
    ("in_flight", "concurrency (in flight)"),
    ("ready_pods", "pods (ready; desired dashed)"),
)
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


class ReportError(Exception):
    pass


Series = dict[str, dict[str, list[tuple[float, float]]]]


def load_samples(path: Path) -> tuple[Series, int]:
    """{service: {metric: [(t, value)]}} and the number of samples."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        raise ReportError(f"no samples at {path}: run `sluice local up` and send some traffic first") from None
    series: Series = {}
    t0: float | None = None
    n = 0
    for line in lines:
        try:
            sample = json.loads(line)
        except ValueError:
            continue
        n += 1
        t = float(sample["t"])
        t0 = t if t0 is None else t0
        for svc, values in (sample.get("services") or {}).items():
            per = series.setdefault(svc, {})
            for key in ("rps", "in_flight", "ready_pods", "desired"):
                per.setdefault(key, []).append((t - t0, float(values.get(key) or 0)))
    if n == 0:
        raise ReportError(f"{path} holds no samples yet")
    return series, n


def write_report(samples: Path, output: Path) -> int:
    series, n = load_samples(samples)
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        _write_plain_png(series, output)
        for i, name in enumerate(series):
            print(f"  colour {COLOURS[i % len(COLOURS)]}: {name}")
        print("  (install matplotlib for labelled axes)")
        return n
    fig, axes = plt.subplots(len(PANELS), 1, sharex=True, figsize=(10, 8))
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for i, (name, per) in enumerate(series.items()):
            colour = tuple(c / 255 for c in COLOURS[i % len(COLOURS)])
            xs, ys = zip(*per[key], strict=True) if per.get(key) else ((), ())
            ax.plot(xs, ys, label=name, color=colour)
            if key == "ready_pods" and per.get("desired"):
                dx, dy = zip(*per["desired"], strict=True)
                ax.plot(dx, dy, linestyle="--", color=colour)
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(str(output))
    plt.close(fig)
    return n


# ---- stdlib fallback ---------------------------------------------------------------------------


def _write_plain_png(series: Series, output: Path, width: int = 900, panel_h: int = 200) -> None:
    height = panel_h * len(PANELS)
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

    t_max = max((pts[-1][0] for per in series.values() for pts in per.values() if pts), default=1.0) or 1.0
    margin = 20
    for p, (key, _title) in enumerate(PANELS):
        top, bottom = p * panel_h + margin, (p + 1) * panel_h - margin
        line(margin, bottom, width - margin, bottom, (0, 0, 0))
        line(margin, top, margin, bottom, (0, 0, 0))
        keys = (key, "desired") if key == "ready_pods" else (key,)
        v_max = max((v for per in series.values() for k in keys for _, v in per.get(k, ())), default=1.0) or 1.0
        for i, per in enumerate(series.values()):
            rgb = COLOURS[i % len(COLOURS)]
            for k in keys:
                pts = [
                    (margin + int((t / t_max) * (width - 2 * margin)), bottom - int((v / v_max) * (bottom - top)))
                    for t, v in per.get(k, ())
                ]
                for (xa, ya), (xb, yb) in itertools.pairwise(pts):
                    line(xa, ya, xb, yb, rgb, dashed=k == "desired")
    raw = b"".join(b"\x00" + bytes(px[y * width * 3 : (y + 1) * width * 3]) for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    output.write_bytes(png)
