"""`sluice local report` from a synthetic history: what is drawn, not only that a file exists.

The history: `hello` idles at zero, scales from zero on a request, bursts into panic, splits its
traffic 50/50 between two revisions, and cools down; `broken` never becomes ready.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluice.local.report import PANIC_COLOUR, build_figure, cold_starts, derive_phases, load_history, write_report

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_796_300_000.0
TARGET = {"metric": "concurrency", "value": 10.0, "utilization": 0.7}


def _rev(rps: float, conc: float, ready: int, desired: int | None, panic: bool, traffic: int) -> dict[str, Any]:
    return {
        "rps": rps,
        "concurrency": conc,
        "ready_pods": ready,
        "desired": desired,
        "panic": panic,
        "traffic": traffic,
        "ready": "True",
        "target": TARGET,
    }


def _sample(i: int) -> dict[str, Any]:
    # 0-9 idle at zero; 10 a request arrives (desired 1, no pod); 12 the pod is ready;
    # 15-24 burst with panic 16-21 and 4 pods; 25-34 split 50/50 with v2; 35-49 cool down.
    v1_ready, v1_desired, in_flight, rps, conc, panic = 0, 0, 0, 0.0, 0.0, False
    if 10 <= i < 12:
        v1_desired, in_flight = 1, 1
    elif 12 <= i < 15:
        v1_ready, v1_desired, rps, conc = 1, 1, 1.0, 1.0
    elif 15 <= i < 25:
        v1_ready, v1_desired, rps, conc, in_flight = (1 if i < 17 else 4), 4, 120.0, 40.0, 40
        panic = 16 <= i < 22
    elif 25 <= i < 35:
        v1_ready, v1_desired, rps, conc, in_flight = 2, 2, 50.0, 10.0, 20
    elif i >= 35:
        v1_ready, v1_desired = 1, 1
    revisions = {"hello-00001": _rev(rps, conc, v1_ready, v1_desired, panic, 50 if i >= 25 else 100)}
    if i >= 25:
        revisions["hello-00002"] = _rev(rps if i < 35 else 0.0, conc if i < 35 else 0.0, 2 if i < 35 else 1,
                                        2 if i < 35 else 1, False, 50)  # fmt: skip
    hello = {"rps": rps * len(revisions), "in_flight": in_flight, "errors_5xx": 0, "ready": "True",
             "reason": "", "message": "", "revisions": revisions}  # fmt: skip
    broken = {
        "rps": 0.0,
        "in_flight": 0,
        "errors_5xx": 0,
        "ready": "Unknown" if i < 5 else "False",
        "reason": "" if i < 5 else "RevisionFailed",
        "message": "" if i < 5 else 'Revision "broken-00001" failed with message: container exited with code 3.',
        "revisions": {"broken-00001": _rev(0.0, 0.0, 0, None, False, 0) | {"ready": "False"}},
    }
    return {"t": T0 + i, "services": {"default/hello": hello, "default/broken": broken}}


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(_sample(i)) + "\n" for i in range(50)) + "not json\n")
    return path


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def test_history_marks_scale_from_zero_and_phases(samples: Path) -> None:
    h = load_history(samples)
    assert h.samples == 50
    assert set(h.revisions) == {
        ("default/hello", "hello-00001"),
        ("default/hello", "hello-00002"),
        ("default/broken", "broken-00001"),
    }
    # The request arrived at 10 (desired 1 after 0, and in flight at the ingress), the pod was ready at 12.
    assert cold_starts(h) == [("hello-00001", 10.0, 12.0)]
    labels = [label for _, label in derive_phases(h)]
    assert labels == ["idle", "scale from zero", "traffic", "cool down"]


def test_figure_has_title_legend_panic_target_and_failure(samples: Path) -> None:
    fig = build_figure(load_history(samples))
    ax_rps, ax_conc, ax_pods = fig.axes
    title = fig._suptitle.get_text()
    assert "default/hello" in title and "default/broken" in title and "UTC" in title

    rps_legend = _legend(ax_rps)
    assert "hello-00001 (50%): requests/s at its pods" in rps_legend
    assert "hello-00002 (50%): requests/s at its pods" in rps_legend  # the split: one line per revision
    assert "panic mode" in rps_legend
    assert "scale from zero (no pod yet)" in rps_legend
    assert "hello-00001 target 10 × 70% = 7/pod" in _legend(ax_conc)
    pods_legend = _legend(ax_pods)
    for rev in ("hello-00001", "hello-00002"):
        assert f"{rev} desired" in pods_legend and f"{rev} ready" in pods_legend

    # Desired is drawn wide and pale under a thin ready line, so equal values stay visible.
    lines = {line.get_label(): line for line in ax_pods.get_lines()}
    assert lines["hello-00001 desired"].get_linewidth() > 3 * lines["hello-00001 ready"].get_linewidth()
    assert lines["hello-00001 desired"].get_alpha() < 0.5

    # The panic span is shaded on every panel, over the panic samples (16 s to 22 s).
    from matplotlib.colors import to_rgba

    for ax in fig.axes:
        # axvspan draws a Rectangle in data x (matplotlib >= 3.9).
        spans_x = [
            (round(p.get_x()), round(p.get_x() + p.get_width()))
            for p in ax.patches
            if to_rgba(p.get_facecolor())[:3] == to_rgba(PANIC_COLOUR)[:3] and p.get_alpha() == pytest.approx(0.12)
        ]
        assert spans_x == [(16, 22)], spans_x

    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("default/broken never became ready: RevisionFailed") for t in texts), texts
    assert any("scale from zero" in t and "~2 s to a ready pod" in t for t in texts), texts
    for phase in ("idle", "scale from zero", "traffic", "cool down"):
        assert phase in texts


def test_cli_report_with_phases(samples: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "samples.jsonl").write_text(samples.read_text())
    out = tmp_path / "r.png"
    done = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), "report", "-o", str(out),
         "--phase", f"{T0}=quiet", "--phase", "15=burst"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    bad = subprocess.run(
        [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), "report", "--phase", "x"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "expected TIME=LABEL" in bad.stderr


def test_explicit_phases_are_drawn(samples: Path, tmp_path: Path) -> None:
    h = load_history(samples)
    fig = build_figure(h, [(0.0, "quiet"), (15.0, "burst")])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "quiet" in texts and "burst" in texts and "idle" not in texts
    assert write_report(samples, tmp_path / "x.png", [(T0 + 15, "burst")]) == 50


def test_old_samples_without_revisions_still_plot(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    rows = [{"t": T0 + i, "services": {"default/a": {"rps": 1.0, "in_flight": 1, "ready_pods": 1, "desired": 1}}}
            for i in range(5)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    h = load_history(path)
    assert list(h.revisions) == [("default/a", "a")]
    assert write_report(path, tmp_path / "old.png") == 5
