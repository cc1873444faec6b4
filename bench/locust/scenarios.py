"""Pure helpers of the locust scenarios (issue 9): schedules, parsing, statistics, targets.

Imported by the runner (`run.py`), by the locustfiles (schedules only) and by the tests; it
imports neither locust (it monkey-patches the stdlib, ARCHITECTURE.md) nor matplotlib.

Why raw samples: locust's own percentiles come from response times rounded to 10 ms above
100 ms (`locust.stats`), which cannot resolve a 5 ms allowance on a 100 ms handler. Every
locust process therefore also writes each request (`start, ms, status, name`) to a raw CSV
(`recorder.py`), and the percentiles of the summary are computed here from those.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "RAW_HEADER",
    "Sample",
    "Stage",
    "Stats",
    "Target",
    "Verdict",
    "cpu_ticks_from_stat",
    "evaluate",
    "format_table",
    "next_due",
    "pace_at",
    "parse_locust_stats",
    "parse_raw",
    "per_second",
    "percentile",
    "schedule_at",
    "service_manifest",
    "stages_duration",
    "summarize",
    "users_for_rate",
]

RAW_HEADER = ("start", "ms", "status", "name")


# ---- load schedules ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """`seconds` of load at `rate` requests per second (open-ended by the next stage)."""

    seconds: float
    rate: float


def stages_duration(stages: Sequence[Stage]) -> float:
    return sum(s.seconds for s in stages)


def users_for_rate(rate: float, per_user_rate: float) -> int:
    """Users needed for `rate` req/s when each user is paced at `per_user_rate` req/s.

    locust is closed-loop: a user waits for its response, so `per_user_rate` must leave it idle
    part of the time (at 4 req/s and 100 ms per request a user is busy 40 %); then the rate holds
    as long as latency stays under 1/per_user_rate.
    """
    if rate <= 0:
        return 0
    if per_user_rate <= 0:
        raise ValueError(f"per_user_rate must be positive, got {per_user_rate}")
    return max(1, math.ceil(rate / per_user_rate - 1e-9))


def schedule_at(
    stages: Sequence[Stage], elapsed: float, per_user_rate: float, spawn_seconds: float = 2.0
) -> tuple[int, float] | None:
    """What a `LoadTestShape.tick()` returns at `elapsed` seconds: (users, spawn rate) or None (stop).

    Each stage's users are reached within about `spawn_seconds` (a step from 1k to 2k req/s is a
    step, as in Knative's load-test, not a slow ramp).
    """
    t = 0.0
    previous = 0
    for stage in stages:
        users = users_for_rate(stage.rate, per_user_rate)
        if elapsed < t + stage.seconds:
            step = abs(users - previous)
            return users, max(1.0, step / max(spawn_seconds, 1e-3))
        t += stage.seconds
        previous = users
    return None


def pace_at(stages: Sequence[Stage], elapsed: float, per_user_rate: float) -> float:
    """The req/s one user keeps at `elapsed`: the stage's rate over its users (the last stage's after
    the end), so that users × pace is the stage's rate exactly (50 req/s is 13 users at 3.85/s)."""
    t = 0.0
    for stage in stages:
        t += stage.seconds
        if elapsed < t:
            break
    users = users_for_rate(stage.rate, per_user_rate)
    return stage.rate / users if users else per_user_rate


def next_due(previous_due: float, now: float, period: float) -> float:
    """When a paced user sends next: one period after its previous slot, so waits absorb the
    scheduling delays (the rate holds exactly); a user more than a period behind (a slow response)
    restarts from now instead of bursting to catch up."""
    due = previous_due + period
    return now if due < now - period else due


def parse_stages(text: str) -> list[Stage]:
    """`[[seconds, rate], ...]` (JSON, as the runner passes it to locust in the environment)."""
    data = json.loads(text)
    if not isinstance(data, list) or not data:
        raise ValueError(f"stages must be a non-empty JSON list of [seconds, rate], got {text!r}")
    out = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError(f"stage {item!r}: expected [seconds, rate]")
        seconds, rate = float(item[0]), float(item[1])
        if seconds <= 0 or rate < 0:
            raise ValueError(f"stage {item!r}: seconds must be > 0 and rate >= 0")
        out.append(Stage(seconds, rate))
    return out


# ---- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    start: float  # epoch seconds when the request was sent
    ms: float  # response time, milliseconds
    status: int  # HTTP status; 0 = connection error / no response
    name: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    @property
    def end(self) -> float:
        return self.start + self.ms / 1000.0


def parse_raw(text: str) -> list[Sample]:
    """The recorder's CSV (`start,ms,status,name`, a header line per writer); bad lines are skipped."""
    out: list[Sample] = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 4 or row[0] == RAW_HEADER[0]:
            continue
        try:
            out.append(Sample(float(row[0]), float(row[1]), int(row[2]), row[3]))
        except ValueError:
            continue
    return out


@dataclass(frozen=True, slots=True)
class LocustRow:
    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rps: float


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan  # locust writes "N/A" for empty percentiles


def parse_locust_stats(text: str) -> dict[str, LocustRow]:
    """locust's `<prefix>_stats.csv`, keyed by Name (the total row is `Aggregated`)."""
    out: dict[str, LocustRow] = {}
    for rec in csv.DictReader(io.StringIO(text)):
        name = rec.get("Name") or ""
        if not name:
            continue
        out[name] = LocustRow(
            name=name,
            requests=int(_num(rec.get("Request Count", "0")) or 0),
            failures=int(_num(rec.get("Failure Count", "0")) or 0),
            median_ms=_num(rec.get("Median Response Time", "nan")),
            p95_ms=_num(rec.get("95%", "nan")),
            p99_ms=_num(rec.get("99%", "nan")),
            max_ms=_num(rec.get("Max Response Time", "nan")),
            rps=_num(rec.get("Requests/s", "nan")),
        )
    return out


def cpu_ticks_from_stat(text: str) -> int:
    """utime + stime (clock ticks) of a `/proc/<pid>/stat` line; the comm field may hold spaces."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


# ---- statistics ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    if q <= 0:
        return sorted_values[0]
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


@dataclass(frozen=True, slots=True)
class Stats:
    requests: int
    errors: int
    seconds: float
    rate: float
    p50: float
    p95: float
    p99: float
    max: float
    error_codes: dict[int, int] = field(default_factory=dict)


def summarize(samples: Iterable[Sample], t0: float | None = None, t1: float | None = None) -> Stats:
    """Statistics of the samples *sent* in [t0, t1) (all when None); rate = requests / (t1 - t0)."""
    chosen = [s for s in samples if (t0 is None or s.start >= t0) and (t1 is None or s.start < t1)]
    if not chosen:
        return Stats(0, 0, 0.0, 0.0, math.nan, math.nan, math.nan, math.nan)
    lo = t0 if t0 is not None else min(s.start for s in chosen)
    hi = t1 if t1 is not None else max(s.start for s in chosen)
    seconds = max(hi - lo, 1e-9)
    ok_ms = sorted(s.ms for s in chosen if s.ok)  # latency of the answers; errors are counted apart
    codes: dict[int, int] = {}
    for s in chosen:
        if not s.ok:
            codes[s.status] = codes.get(s.status, 0) + 1
    return Stats(
        requests=len(chosen),
        errors=sum(codes.values()),
        seconds=seconds,
        rate=len(chosen) / seconds,
        p50=percentile(ok_ms, 50),
        p95=percentile(ok_ms, 95),
        p99=percentile(ok_ms, 99),
        max=ok_ms[-1] if ok_ms else math.nan,
        error_codes=codes,
    )


@dataclass(frozen=True, slots=True)
class SecondBin:
    t: float  # seconds since t0 (bin start)
    requests: int
    errors: int
    p50: float
    p95: float
    p99: float


def per_second(samples: Iterable[Sample], t0: float, width: float = 1.0) -> list[SecondBin]:
    """Requests completed per `width`-second bin since t0, with their latency percentiles."""
    bins: dict[int, list[Sample]] = {}
    for s in samples:
        i = math.floor((s.end - t0) / width)
        if i >= 0:
            bins.setdefault(i, []).append(s)
    out = []
    for i in range(max(bins) + 1 if bins else 0):
        chosen = bins.get(i, [])
        ms = sorted(s.ms for s in chosen)
        out.append(
            SecondBin(
                t=i * width,
                requests=len(chosen),
                errors=sum(1 for s in chosen if not s.ok),
                p50=percentile(ms, 50),
                p95=percentile(ms, 95),
                p99=percentile(ms, 99),
            )
        )
    return out


# ---- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A service level of one scenario row; every bound that is None is not checked.

    `overhead_p95_ms`: p95 minus `baseline_ms` (the handler's own p95, or the app's start-up
    time for scale-from-zero) must not exceed it. `rate_within`: achieved / wanted rate off by
    at most this fraction. `max_ms`: the slowest response. Errors must be zero unless
    `max_errors` says otherwise.
    """

    overhead_p95_ms: float | None = None
    baseline_ms: float = 0.0
    rate: float | None = None
    rate_within: float | None = None
    max_ms: float | None = None
    max_errors: int = 0

    def describe(self) -> str:
        parts = []
        if self.overhead_p95_ms is not None:
            parts.append(f"p95 ≤ {self.baseline_ms:.1f}+{self.overhead_p95_ms:g} ms")
        if self.rate is not None and self.rate_within is not None:
            parts.append(f"rate {self.rate:g}±{self.rate_within * 100:g}%")
        if self.max_ms is not None:
            parts.append(f"max < {self.max_ms / 1000:g} s")
        parts.append("0 errors" if self.max_errors == 0 else f"≤ {self.max_errors} errors")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    misses: tuple[str, ...]

    @property
    def label(self) -> str:
        return "PASS" if self.ok else "MISS"


def evaluate(stats: Stats, target: Target) -> Verdict:
    misses: list[str] = []
    if stats.requests == 0:
        misses.append("no requests")
    if stats.errors > target.max_errors:
        misses.append(f"{stats.errors} errors {dict(sorted(stats.error_codes.items()))}")
    if target.overhead_p95_ms is not None:
        over = stats.p95 - target.baseline_ms
        if not over <= target.overhead_p95_ms:  # NaN misses too
            misses.append(f"p95 overhead {over:.1f} ms > {target.overhead_p95_ms:g} ms")
    if target.rate is not None and target.rate_within is not None and target.rate > 0:
        off = abs(stats.rate - target.rate) / target.rate
        if not off <= target.rate_within:
            misses.append(f"rate {stats.rate:.1f}/s is {off * 100:.1f}% off {target.rate:g}/s")
    if target.max_ms is not None and not stats.max < target.max_ms:
        misses.append(f"max {stats.max:.0f} ms ≥ {target.max_ms:.0f} ms")
    return Verdict(not misses, tuple(misses))


# ---- output -------------------------------------------------------------------------------------


def _fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    stats: Stats
    target: Target
    verdict: Verdict
    note: str = ""
    # Share of all CPUs used during the run by processes that are not this benchmark's (another
    # engineer's tests on a shared machine): above DISTURBED the row is flagged.
    others_cpu: float = math.nan


DISTURBED = 0.25
TABLE_HEADER = (
    "scenario", "req/s", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "others' CPU", "target",
    "result",
)  # fmt: skip


def _fmt_share(share: float) -> str:
    if math.isnan(share):
        return "-"
    return f"{share * 100:.0f}%" + (" !" if share > DISTURBED else "")


def table_cells(row: Row) -> tuple[str, ...]:
    s = row.stats
    return (
        row.scenario,
        f"{s.rate:.1f}",
        str(s.requests),
        _fmt_ms(s.p50),
        _fmt_ms(s.p95),
        _fmt_ms(s.p99),
        _fmt_ms(s.max),
        str(s.errors),
        "-"
        if math.isnan(row.others_cpu)
        else f"{row.others_cpu * 100:.0f}%" + (" !" if row.others_cpu > DISTURBED else ""),
        row.target.describe(),
        row.verdict.label + ("" if row.verdict.ok else ": " + "; ".join(row.verdict.misses)),
    )


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    cells = [TABLE_HEADER, *(table_cells(r) for r in rows)]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in TABLE_HEADER) + "|")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in cells)


# ---- manifests ----------------------------------------------------------------------------------


def service_manifest(
    name: str, annotations: dict[str, str], working_dir: str, env: dict[str, str] | None = None
) -> str:
    """A Knative Service running examples/autoscale.py, as JSON (which is YAML, for `sluice local`)."""
    container: dict[str, object] = {
        "image": "ghcr.io/knative/autoscale-go:latest",
        "command": ["python3", "autoscale.py"],  # Debian has no `python` command
        "workingDir": working_dir,
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz"}},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {
                "metadata": {"annotations": dict(sorted(annotations.items()))},
                "spec": {"containerConcurrency": 0, "timeoutSeconds": 60, "containers": [container]},
            }
        },
    }
    return json.dumps(doc, indent=1) + "\n"
