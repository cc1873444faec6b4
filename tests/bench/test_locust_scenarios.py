"""The locust runner's pure helpers (bench/locust/scenarios.py): schedules, parsing, statistics,
targets and the summary table. Locust itself is never imported here (it monkey-patches the
stdlib, ARCHITECTURE.md); the locust CSV sample follows locust 2.x's `<prefix>_stats.csv` columns.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LOCUST_DIR = Path(__file__).resolve().parents[2] / "bench" / "locust"


def _load(name: str) -> ModuleType:
    # bench/locust/ is a directory of scripts (no __init__.py, so it never shadows the real
    # `locust` package): load the module by path under its script name.
    spec = importlib.util.spec_from_file_location(name, LOCUST_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sc = _load("scenarios")


def test_loading_the_helpers_does_not_import_locust() -> None:
    assert "locust" not in sys.modules
    assert not (LOCUST_DIR / "__init__.py").exists()


# ---- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "per_user", "users"),
    [(200, 4, 50), (1000, 4, 250), (150, 4, 38), (1, 4, 1), (0, 4, 0), (300, 4.0, 75)],
)
def test_users_for_rate(rate: float, per_user: float, users: int) -> None:
    assert sc.users_for_rate(rate, per_user) == users


def test_users_for_rate_rejects_a_non_positive_pace() -> None:
    with pytest.raises(ValueError, match="per_user_rate"):
        sc.users_for_rate(10, 0)


def test_schedule_steps_like_knatives_load_test() -> None:
    stages = [sc.Stage(40, 100), sc.Stage(40, 200), sc.Stage(40, 300)]
    assert sc.stages_duration(stages) == 120
    # (elapsed, users, spawn rate): each step is reached within ~2 s, then the run stops.
    table = [(0.0, 25, 12.5), (39.9, 25, 12.5), (40.0, 50, 12.5), (80.0, 75, 12.5), (119.9, 75, 12.5)]
    for elapsed, users, spawn in table:
        assert sc.schedule_at(stages, elapsed, 4.0) == (users, spawn), elapsed
    assert sc.schedule_at(stages, 120.0, 4.0) is None


def test_schedule_spawn_rate_is_at_least_one() -> None:
    assert sc.schedule_at([sc.Stage(10, 2)], 0.0, 4.0) == (1, 1.0)


def test_pace_makes_users_add_up_to_the_rate() -> None:
    stages = [sc.Stage(10, 50), sc.Stage(10, 200)]
    assert sc.pace_at(stages, 0.0, 4.0) * sc.users_for_rate(50, 4.0) == pytest.approx(50)
    assert sc.pace_at(stages, 0.0, 4.0) == pytest.approx(50 / 13)
    assert sc.pace_at(stages, 10.0, 4.0) == pytest.approx(4.0)
    assert sc.pace_at(stages, 99.0, 4.0) == pytest.approx(4.0)  # after the end: the last stage's


def test_next_due_keeps_the_schedule_and_drops_a_backlog() -> None:
    assert sc.next_due(10.0, 10.13, 0.25) == 10.25  # on time: one period after the last slot
    assert sc.next_due(10.0, 10.30, 0.25) == 10.25  # a little late: no wait, schedule kept
    assert sc.next_due(10.0, 10.60, 0.25) == 10.60  # more than a period behind: restart from now


def test_parse_stages() -> None:
    assert sc.parse_stages("[[45, 200]]") == [sc.Stage(45.0, 200.0)]
    for bad in ("[]", "{}", "[[1]]", "[[0, 5]]", "[[5, -1]]"):
        with pytest.raises(ValueError):
            sc.parse_stages(bad)


# ---- parsing ------------------------------------------------------------------------------------

LOCUST_STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,\
Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,GET,8991,2,110,112.71,100.4,336.8,50.0,199.8,0.04,110,110,110,110,120,120,130,140,300,340,340
,Aggregated,8991,2,110,112.71,100.4,336.8,50.0,199.8,0.04,110,110,110,110,120,120,130,140,300,340,340
COLD,cold /zero-1-1/,1,0,N/A,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
"""


def test_parse_locust_stats() -> None:
    rows = sc.parse_locust_stats(LOCUST_STATS_CSV)
    agg = rows["Aggregated"]
    assert (agg.requests, agg.failures, agg.median_ms, agg.p95_ms, agg.p99_ms) == (8991, 2, 110, 120, 140)
    assert agg.max_ms == pytest.approx(336.8)
    assert agg.rps == pytest.approx(199.8)
    assert math.isnan(rows["cold /zero-1-1/"].p95_ms)  # locust's "N/A"


def test_parse_raw_skips_headers_and_bad_lines() -> None:
    text = (
        "start,ms,status,name\n"
        "1000.5,101.25,200,GET\n"
        "1000.6,oops,200,GET\n"
        "start,ms,status,name\n"  # a second writer appended to the same file
        "1000.7,20000.0,0,GET\n"
        "short,line\n"
    )
    samples = sc.parse_raw(text)
    assert samples == [sc.Sample(1000.5, 101.25, 200, "GET"), sc.Sample(1000.7, 20000.0, 0, "GET")]
    assert samples[0].ok and not samples[1].ok
    assert samples[0].end == pytest.approx(1000.60125)


def test_cpu_ticks_from_stat_with_spaces_in_the_name() -> None:
    line = "4242 (python -m locust) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 56 0 0 20 0 3 0 99 0 0"
    assert sc.cpu_ticks_from_stat(line) == 1234 + 56


# ---- statistics ---------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert sc.percentile(values, 50) == 50
    assert sc.percentile(values, 95) == 95
    assert sc.percentile(values, 99) == 99
    assert sc.percentile(values, 100) == 100
    assert sc.percentile(values, 0) == 1
    assert sc.percentile([7.0], 95) == 7
    assert math.isnan(sc.percentile([], 50))


def _samples(t0: float, n: int, ms: float, status: int = 200, step: float = 0.01) -> list[Any]:
    return [sc.Sample(t0 + i * step, ms, status, "GET") for i in range(n)]


def test_summarize_a_window_excludes_warmup() -> None:
    warm = _samples(100.0, 100, 500.0)  # sent in [100, 101): the warm-up
    steady = _samples(101.0, 200, 101.0)  # sent in [101, 103)
    stats = sc.summarize(warm + steady, 101.0, 103.0)
    assert stats.requests == 200
    assert stats.rate == pytest.approx(100.0)
    assert stats.p95 == 101.0 and stats.max == 101.0
    assert stats.errors == 0


def test_summarize_counts_errors_and_keeps_them_out_of_latency() -> None:
    samples = [*_samples(0.0, 98, 100.0), sc.Sample(0.5, 1.0, 503, "GET"), sc.Sample(0.6, 30000.0, 0, "GET")]
    stats = sc.summarize(samples)
    assert stats.errors == 2
    assert stats.error_codes == {503: 1, 0: 1}
    assert stats.max == 100.0


def test_summarize_nothing() -> None:
    stats = sc.summarize([])
    assert stats.requests == 0 and math.isnan(stats.p95)
    verdict = sc.evaluate(stats, sc.Target())
    assert not verdict.ok and "no requests" in verdict.misses


def test_per_second_bins_by_completion_time() -> None:
    samples = [sc.Sample(10.0, 100.0, 200, "a"), sc.Sample(10.5, 600.0, 200, "a"), sc.Sample(12.2, 10.0, 500, "a")]
    bins = sc.per_second(samples, 10.0)
    assert [(b.t, b.requests, b.errors) for b in bins] == [(0.0, 1, 0), (1.0, 1, 0), (2.0, 1, 1)]
    assert bins[1].p95 == 600.0


# ---- targets and the table ----------------------------------------------------------------------


def _stats(p95: float, rate: float = 200.0, errors: int = 0, max_ms: float = 150.0) -> Any:
    codes = {503: errors} if errors else {}
    return sc.Stats(9000, errors, 45.0, rate, 101.0, p95, p99=p95 + 5, max=max_ms, error_codes=codes)


@pytest.mark.parametrize(
    ("stats_kw", "ok", "miss"),
    [
        ({"p95": 109.9}, True, ""),
        ({"p95": 110.1}, False, "p95 overhead 5.1 ms > 5 ms"),
        ({"p95": 105.0, "rate": 197.0}, False, "rate 197.0/s is 1.5% off 200/s"),
        ({"p95": 105.0, "rate": 198.5}, True, ""),
        ({"p95": 105.0, "errors": 3}, False, "3 errors {503: 3}"),
        ({"p95": math.nan}, False, "p95 overhead nan ms > 5 ms"),
    ],
)
def test_evaluate_probe_target(stats_kw: dict[str, Any], ok: bool, miss: str) -> None:
    target = sc.Target(overhead_p95_ms=5.0, baseline_ms=105.0, rate=200.0, rate_within=0.01)
    verdict = sc.evaluate(_stats(**stats_kw), target)
    assert verdict.ok is ok
    assert verdict.label == ("PASS" if ok else "MISS")
    if miss:
        assert miss in verdict.misses


def test_evaluate_load_test_max() -> None:
    target = sc.Target(overhead_p95_ms=7.5, baseline_ms=105.0, max_ms=10_000.0)
    assert sc.evaluate(_stats(110.0, max_ms=9_999.0), target).ok
    assert sc.evaluate(_stats(110.0, max_ms=10_000.0), target).misses == ("max 10000 ms ≥ 10000 ms",)


def test_target_describe() -> None:
    assert sc.Target(5.0, 105.04, 200.0, 0.01).describe() == "p95 ≤ 105.0+5 ms, rate 200±1%, 0 errors"
    assert sc.Target(7.5, 100.0, max_ms=10_000).describe() == "p95 ≤ 100.0+7.5 ms, max < 10 s, 0 errors"


def test_format_table_plain_and_markdown() -> None:
    target = sc.Target(5.0, 105.0, 200.0, 0.01)
    rows = [
        sc.Row("dataplane: queue-proxy", _stats(108.0), target, sc.evaluate(_stats(108.0), target), others_cpu=0.05),
        sc.Row("rollout-probe", _stats(120.0), target, sc.evaluate(_stats(120.0), target), others_cpu=0.4),
    ]
    plain = sc.format_table(rows).splitlines()
    assert plain[0].startswith("scenario") and "others' CPU" in plain[0]
    assert "PASS" in plain[1] and " 5%" in plain[1]
    assert "MISS: p95 overhead 15.0 ms > 5 ms" in plain[2] and "40% !" in plain[2]
    md = sc.format_table(rows, markdown=True).splitlines()
    assert md[0].startswith("| scenario |") and md[1].startswith("|---|")
    assert len(md) == 4


def test_service_manifest_is_json_yaml_for_sluice_local() -> None:
    text = sc.service_manifest(
        "bench-serve", {"autoscaling.knative.dev/min-scale": "1"}, "/repo/examples", {"BENCH_VERSION": "2"}
    )
    doc = json.loads(text)
    assert doc["kind"] == "Service" and doc["metadata"]["name"] == "bench-serve"
    tmpl = doc["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1"}
    container = tmpl["spec"]["containers"][0]
    assert container["command"] == ["python3", "autoscale.py"]
    assert container["workingDir"] == "/repo/examples"
    assert container["env"] == [{"name": "BENCH_VERSION", "value": "2"}]
