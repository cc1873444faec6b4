"""The benchmark runner's parsers, on captured text (no wrk, nginx or /proc of a live run).

The wrk samples are real `wrk 4.1.0 --latency` output from this project's runner; the error
lines follow wrk's `src/wrk.c` format (`Socket errors: ...`, `Non-2xx or 3xx responses: ...`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_runner() -> ModuleType:
    # bench/ is a directory of scripts, not a package: load the runner by path, so that
    # `mypy --strict bench/proxy_bench.py tests/bench` sees the file under one module name.
    path = Path(__file__).resolve().parents[2] / "bench" / "proxy_bench.py"
    spec = importlib.util.spec_from_file_location("proxy_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("proxy_bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pb = _load_runner()

WRK_OK = """\
Running 1s test @ http://127.0.0.1:32777/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   142.45us   28.27us 525.00us   83.67%
    Req/Sec    52.98k     3.54k   55.67k    81.82%
  Latency Distribution
     50%  140.00us
     75%  152.00us
     90%  173.00us
     99%  238.00us
  57911 requests in 1.10s, 8.23MB read
Requests/sec:  52633.44
Transfer/sec:      7.48MB
"""

WRK_ERRORS = """\
Running 10s test @ http://127.0.0.1:40211/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.71ms  450.12us  12.50ms   91.02%
    Req/Sec    29.61k     1.20k   31.02k    77.00%
  Latency Distribution
     50%    1.65ms
     75%    1.80ms
     90%    2.01ms
     99%    1.02s
  294712 requests in 10.00s, 41.88MB read
  Socket errors: connect 0, read 7, write 1, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  29469.55
Transfer/sec:      4.19MB
"""

# `comm` with spaces and a ')' inside, as a thread name can have.
PROC_STAT = (
    "4242 (python -m (proxy)) S 4241 4242 2644 0 -1 4194304 5120 0 0 0 "
    "1234 567 0 0 20 0 3 0 40790 31334400 7383 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0"
)

PROC_STATUS = """\
Name:\tpython
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t   40000 kB
VmSize:\t   38000 kB
VmHWM:\t   24000 kB
VmRSS:\t   21532 kB
RssAnon:\t   12000 kB
Threads:\t3
"""


def test_wrk_success_output() -> None:
    r = pb.parse_wrk_output(WRK_OK)
    assert r.requests == 57911
    assert r.duration_s == pytest.approx(1.10)
    assert r.req_per_s == pytest.approx(52633.44)
    assert r.p50_us == pytest.approx(140.0)
    assert r.p99_us == pytest.approx(238.0)
    assert r.errors == 0
    assert r.error_text() == "0"


def test_wrk_errors_and_units() -> None:
    r = pb.parse_wrk_output(WRK_ERRORS)
    assert r.requests == 294712
    assert r.duration_s == pytest.approx(10.0)
    assert r.p50_us == pytest.approx(1650.0)
    assert r.p99_us == pytest.approx(1_020_000.0)
    assert (r.connect_errors, r.read_errors, r.write_errors, r.timeouts) == (0, 7, 1, 3)
    assert r.non2xx == 12
    assert r.socket_errors == 11
    assert r.errors == 23
    assert r.error_text() == "23 (non-2xx 12, read 7, write 1, timeout 3)"


def test_wrk_output_without_latency_distribution_is_rejected() -> None:
    no_latency = "\n".join(line for line in WRK_OK.splitlines() if "%  " not in line)
    with pytest.raises(ValueError, match=r"latency distribution 50%.*--latency"):
        pb.parse_wrk_output(no_latency)


def test_wrk_connection_refused_is_rejected() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        pb.parse_wrk_output("unable to connect to 127.0.0.1:54171 Connection refused\n")


@pytest.mark.parametrize(
    ("value", "unit", "us"),
    [
        ("238.00", "us", 238.0),
        ("1.65", "ms", 1650.0),
        ("2.00", "s", 2e6),
        ("1.00", "m", 6e7),
        ("1", "h", 3.6e9),
    ],
)
def test_wrk_time_units(value: str, unit: str, us: float) -> None:
    assert pb.parse_wrk_time_us(value, unit) == pytest.approx(us)


def test_wrk_time_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unit"):
        pb.parse_wrk_time_us("1", "ns")


def test_proc_stat_fields_after_a_tricky_comm() -> None:
    st = pb.parse_proc_stat(PROC_STAT)
    assert st.pid == 4242
    assert st.comm == "python -m (proxy)"
    assert st.state == "S"
    assert st.ppid == 4241
    assert (st.utime, st.stime) == (1234, 567)
    assert st.cpu_ticks == 1801


def test_proc_stat_of_a_real_process() -> None:
    with open("/proc/self/stat") as f:
        st = pb.parse_proc_stat(f.read())
    assert st.pid > 0 and st.cpu_ticks >= 0


@pytest.mark.parametrize("bad", ["", "4242 python S 1", "4242 (python) S 1 2 3"])
def test_proc_stat_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        pb.parse_proc_stat(bad)


def test_vmrss() -> None:
    assert pb.parse_vmrss_kb(PROC_STATUS) == 21532
    with pytest.raises(ValueError, match="VmRSS"):
        pb.parse_vmrss_kb("Name:\tkthreadd\nState:\tS (sleeping)\n")


def test_cpu_us_per_request() -> None:
    # 150 ticks at 100 Hz = 1.5 s of CPU over 50,000 requests = 30 µs each.
    assert pb.cpu_us_per_request(150, 50_000, 100) == pytest.approx(30.0)


def test_cpu_model() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
    assert pb.cpu_model(text) == "AMD EPYC 7B13"
    assert pb.cpu_model("processor\t: 0\n") == "unknown"


@pytest.mark.parametrize(("text", "seconds"), [("10", 10), ("3s", 3), ("2m", 120), ("1h", 3600)])
def test_durations(text: str, seconds: int) -> None:
    assert pb.parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["1.5s", "500ms", "", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        pb.parse_duration_s(text)


def test_targets_and_connections() -> None:
    assert pb.parse_targets("direct, nginx,sluice-cc0,sluice-cc10") == [
        "direct",
        "nginx",
        "sluice-cc0",
        "sluice-cc10",
    ]
    assert pb.sluice_cc("sluice-cc10") == 10
    assert pb.sluice_cc("nginx") is None
    assert pb.sluice_cc("sluice-cc0-metrics") == 0
    assert pb.telemetry_config("sluice-cc10", 1) is None
    assert '"protocol":"prometheus","endpoint":"127.0.0.1:9"' in (pb.telemetry_config("sluice-cc0-metrics", 9) or "")
    assert '"samplingRate":0' in (pb.telemetry_config("sluice-cc0-trace0", 9) or "")
    for bad in ("haproxy", "sluice", "direct,direct", ""):
        with pytest.raises(ValueError):
            pb.parse_targets(bad)
    assert pb.parse_connections("1,10,50") == [1, 10, 50]
    for bad in ("0", "a", ""):
        with pytest.raises(ValueError):
            pb.parse_connections(bad)


def _report(
    target: str, ready_ms: float, rss_kb: int, rows: list[tuple[int, float, float]]
) -> Any:  # proxy_bench.TargetReport
    rep = pb.TargetReport(target, ready_ms, rss_kb)
    for c, rps, p50 in rows:
        w = pb.WrkResult(requests=int(rps), duration_s=1.0, req_per_s=rps, p50_us=p50, p99_us=p50 * 2)
        rep.rows.append(pb.Row(target, c, w, rss_kb, rss_kb, 10.0))
    return rep


def test_derived_lines_verdicts() -> None:
    reports = {
        "direct": _report("direct", 10, 8000, [(1, 30000, 30), (50, 50000, 700)]),
        "nginx": _report("nginx", 10, 8000, [(1, 12000, 80), (50, 40000, 1000)]),
        # ratio 26000/40000 = 0.65 PASS; added 120-30 = 90 vs 50 -> 1.8 PASS; ready PASS; RSS PASS
        "sluice-cc0": _report("sluice-cc0", 150, 20 * 1024, [(1, 8000, 120), (50, 26000, 1500)]),
        # ratio 0.5 MISS; added 200-30 = 170 -> 3.4 MISS; ready MISS; RSS MISS
        "sluice-cc10": _report("sluice-cc10", 400, 31 * 1024, [(1, 5000, 200), (50, 20000, 2000)]),
    }
    text = "\n".join(pb.derived_lines(reports))
    assert "nginx-as-proxy added p50 at c=1: 50 µs" in text
    assert "sluice-cc0 c=50 req/s ÷ nginx c=50 req/s: 26,000 / 40,000 = 0.65 (target ≥ 0.6) PASS" in text
    assert "sluice-cc0 added p50 at c=1: 90 µs; ÷ nginx's 50 µs = 1.80 (target ≤ 2) PASS" in text
    assert "sluice-cc10 c=50 req/s ÷ nginx c=50 req/s: 20,000 / 40,000 = 0.50 (target ≥ 0.6) MISS" in text
    assert "sluice-cc10 added p50 at c=1: 170 µs; ÷ nginx's 50 µs = 3.40 (target ≤ 2) MISS" in text
    assert "sluice-cc0 ready to serve: 150 ms" in text and "(target ≤ 300 ms) PASS" in text
    assert "sluice-cc10 ready to serve: 400 ms from spawn to the first kube-probe 200 (target ≤ 300 ms) MISS" in text
    assert "sluice-cc0 RSS idle: 20.0 MB (target < 30 MB) PASS" in text
    assert "sluice-cc10 RSS idle: 31.0 MB (target < 30 MB) MISS" in text


def test_derived_lines_without_sluice() -> None:
    reports = {
        "direct": _report("direct", 10, 8000, [(1, 30000, 30)]),
        "nginx": _report("nginx", 10, 8000, [(1, 12000, 80)]),
    }
    lines = pb.derived_lines(reports)
    assert lines[0] == "- nginx-as-proxy added p50 at c=1: 50 µs (nginx p50 - direct p50)"
    assert "sluice targets not measured" in lines[1]


def test_long_run_line() -> None:
    rep = _report("sluice-cc0", 100, 20 * 1024, [])
    rep.long = pb.LongRun("sluice-cc0", 1_000_000, 1_003_421, 50, 34.2, 0, 40 * 1024)
    text = "\n".join(pb.derived_lines({"sluice-cc0": rep}))
    assert "RSS after 1,003,421 requests (--long 1,000,000, wrk -t1 -c50, 34 s, 0 errors): 40.0 MB" in text
    assert "(target < 45 MB) PASS" in text
