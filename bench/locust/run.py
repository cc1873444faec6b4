"""One command for Knative's performance scenarios on `sluice local`, driven by locust (issue 9).

    python bench/locust/run.py                      # all four scenarios, full (scaled) durations
    python bench/locust/run.py --quick              # a smoke run, ~3 min
    python bench/locust/run.py --scenario load-test --scenario rollout-probe

Starts `sluice local up` in its own state directory on a free port and loopback block, runs the
scenarios one after the other, each as its own headless, time-bounded locust process on
loopback only, samples the instance (`status.json`, i.e. what `sluice local status --json`
prints) and the CPU of every process group once a second, then prints a summary table and
writes PNG plots, locust's CSVs, the raw samples and `summary.md` under
`bench/results/locust-<UTC timestamp>/`. Everything it starts is stopped in a `finally`
(Ctrl-C included). See bench/README.md ("Locust scenarios") for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios import (
    DISTURBED,
    Row,
    Sample,
    Stage,
    Stats,
    Target,
    cpu_ticks_from_stat,
    evaluate,
    format_table,
    parse_locust_stats,
    parse_raw,
    per_second,
    percentile,
    service_manifest,
    stages_duration,
    summarize,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "examples"
APP = EXAMPLES / "autoscale.py"
SCENARIOS = ("dataplane-probe", "rollout-probe", "load-test", "scale-from-zero")
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
HANDLER = "?sleep=100"  # Knative's performance suite uses a 100 ms handler

# Knative's allowances (test/performance) and Sluice's targets: half of them, ms over the handler.
KNATIVE_PLAIN, KNATIVE_PROBE, KNATIVE_LOAD, KNATIVE_ROLLOUT = 5.0, 10.0, 15.0, 10.0
SLUICE_PROBE, SLUICE_LOAD, SLUICE_ROLLOUT = 5.0, 7.5, 5.0
COLD_EXTRA_MS = 1000.0  # scale-from-zero: within 1 s of the app's own start-up time


@dataclass(frozen=True, slots=True)
class Plan:
    probe_rate: float
    probe_seconds: float
    load_stages: tuple[Stage, ...]
    rollout_rate: float
    rollout_seconds: float
    rollout_apply_at: float
    cold_services: int
    cold_rounds: int
    warmup: float
    per_user_rate: float


def make_plan(args: argparse.Namespace) -> Plan:
    r = float(args.rate)
    if args.quick:
        return Plan(r, 12, (Stage(10, r / 2), Stage(10, r), Stage(10, 1.5 * r)), r, 25, 8, 5, 1, 3, args.per_user_rate)
    step = float(args.load_step_seconds)
    return Plan(
        probe_rate=r,
        probe_seconds=float(args.probe_seconds),
        # Knative: 1k, 2k, 3k req/s; here the same 1:2:3 steps around the probe rate.
        load_stages=(Stage(step, r / 2), Stage(step, r), Stage(step, 1.5 * r)),
        rollout_rate=r,
        rollout_seconds=60,
        rollout_apply_at=20,
        cold_services=5,
        cold_rounds=int(args.cold_rounds),
        warmup=5,
        per_user_rate=args.per_user_rate,
    )


# ---- processes and the machine -------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_net() -> str:
    """A 127.N block no listening socket uses (another `sluice local` may run on this machine)."""
    used = Path("/proc/net/tcp").read_text() if Path("/proc/net/tcp").exists() else ""
    taken = set()
    for line in used.splitlines()[1:]:
        local = line.split()[1].split(":")[0]
        if len(local) == 8:
            b = bytes.fromhex(local)[::-1]  # little-endian on x86
            if b[0] == 127:
                taken.add(b[1])
    for n in range(201, 250):
        if n not in taken:
            return f"127.{n}"
    return "127.250"


def read_ticks(pid: int) -> int | None:
    try:
        return cpu_ticks_from_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class CpuBook:
    """Last seen CPU ticks of each tracked pid, by group (locust / sluice / apps)."""

    def __init__(self) -> None:
        self.ticks: dict[str, dict[int, int]] = {"locust": {}, "sluice": {}, "apps": {}}
        self.lock = threading.Lock()

    def see(self, group: str, pid: int) -> None:
        t = read_ticks(pid)
        if t is not None:
            with self.lock:
                self.ticks[group][pid] = t

    def total(self, group: str) -> int:
        with self.lock:
            return sum(self.ticks[group].values())


@dataclass
class Timeline:
    """Once-a-second samples of the instance and of the CPU, for the plots and the CPU shares."""

    status: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    # (time, machine busy jiffies, machine total jiffies, locust, sluice, apps ticks)
    cpu: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


class Sluice:
    """`sluice local up` as a child, in its own state dir and process group."""

    def __init__(self, home: Path, port: int, net: str, manifests: list[Path], overrides: list[str]) -> None:
        self.home = home
        self.port = port
        self.net = net
        self.argv = [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), "up"]
        for m in manifests:
            self.argv += ["-f", str(m)]
        self.argv += ["--port", str(port), "--net", net]
        for o in overrides:
            self.argv += ["--autoscaler-config", o]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "up.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(self.home), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def state(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.home / "state.json").read_text())
            if isinstance(data, dict):
                return data
        return {}

    def status(self) -> dict[str, Any]:
        """What `sluice local status --json` prints (it reads this file): read directly, once a
        second, rather than starting a Python process a second on a 2-core machine."""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.home / "status.json").read_text())
            if isinstance(data, dict):
                return data
        return {}

    def pids(self) -> tuple[list[int], list[int]]:
        """(system pids: supervisor, activator, autoscaler, queue-proxies; user-container pids)."""
        system = [self.proc.pid] if self.proc is not None else []
        apps: list[int] = []
        for p in self.state().get("processes") or ():
            pid = int(p.get("pid", 0))
            if pid > 0:
                (apps if str(p.get("name", "")).endswith("/user-container") else system).append(pid)
        return system, apps

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C semantics: it stops all it started
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.cli("down", timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Sampler(threading.Thread):
    def __init__(self, sluice: Sluice, book: CpuBook, timeline: Timeline, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.sluice = sluice
        self.book = book
        self.timeline = timeline
        self.period = period
        self.locust_pid = 0
        self.extra_apps: list[int] = []
        self.stopping = threading.Event()

    def sample_cpu(self) -> None:
        system, apps = self.sluice.pids()
        for pid in system:
            self.book.see("sluice", pid)
        for pid in apps + self.extra_apps:
            self.book.see("apps", pid)
        if self.locust_pid:
            for pid in [self.locust_pid, *children_of(self.locust_pid)]:
                self.book.see("locust", pid)
        busy, total = machine_ticks()
        self.timeline.cpu.append(
            (
                time.time(),
                busy,
                total,
                self.book.total("locust"),
                self.book.total("sluice"),
                self.book.total("apps"),
            )
        )

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                self.sample_cpu()
                snap = self.sluice.status()
                if snap:
                    self.timeline.status.append((time.time(), snap))
            self.stopping.wait(self.period)


# ---- status helpers ------------------------------------------------------------------------------


def revisions(snap: dict[str, Any], service: str) -> list[dict[str, Any]]:
    for svc in snap.get("services") or ():
        if svc.get("name") == service:
            return list(svc.get("revisions") or ())
    return []


def service_ready(snap: dict[str, Any], service: str) -> bool:
    return any(s.get("name") == service and s.get("ready") == "True" for s in snap.get("services") or ())


def wait_until(what: str, check: Callable[[], bool], timeout: float, period: float = 0.2) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(period)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def service_at_zero(snap: dict[str, Any], service: str) -> bool:
    """Ready, with a revision and no pod at all (not even one starting)."""
    revs = revisions(snap, service)
    return service_ready(snap, service) and bool(revs) and not any(r.get("pods") for r in revs)


def scaled_down_to_zero(snap: dict[str, Any], service: str) -> bool:
    """At zero pods because the autoscaler decided 0 (desired 0), not merely not started yet."""
    return service_at_zero(snap, service) and all(r.get("desired") == 0 for r in revisions(snap, service))


def ready_pod_ip(sluice: Sluice, service: str) -> str:
    for rev in revisions(sluice.status(), service):
        for pod in rev.get("pods") or ():
            if pod.get("ready") and pod.get("ip"):
                return str(pod["ip"])
    return ""


# ---- locust ----------------------------------------------------------------------------------------


@dataclass
class LocustRun:
    name: str
    samples: list[Sample]
    t0: float
    t1: float
    locust_rows: dict[str, Any]
    cpu_seconds: float
    command: str


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path, plan: Plan) -> None:
        self.args = args
        self.out = out
        self.plan = plan
        self.timeline = Timeline()
        self.book = CpuBook()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.commands: list[str] = []
        self.cpu_lines: list[str] = []
        self.handler_p95 = math.nan
        self.sluice: Sluice | None = None
        self.sampler: Sampler | None = None
        self.app_dir = EXAMPLES if not args.app_nodelay else nodelay_app(out / "app")

    # -- locust process

    def locust(
        self,
        name: str,
        locustfile: str,
        host: str,
        env: dict[str, str],
        seconds: float,
        users: int = 0,
        on_tick: Callable[[float], None] | None = None,
    ) -> LocustRun:
        d = self.out / name
        d.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "locust", "-f", str(HERE / locustfile), "--headless", "--host", host,
            "--csv", str(d / "locust"), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5",
        ]  # fmt: skip
        if users:
            argv += ["-u", str(users), "-r", str(max(users, 1) * 10), "-t", f"{math.ceil(seconds)}s"]
        if self.args.workers > 1:
            argv += ["--processes", str(self.args.workers)]
        full_env = dict(os.environ) | {"SLUICE_BENCH_RAW_DIR": str(d), "PYTHONUNBUFFERED": "1"} | env
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        command = f"{shown} {' '.join(shlex.quote(a) for a in argv)}"
        self.commands.append(command)
        assert self.sampler is not None
        print(f"  [{time.strftime('%H:%M:%S')}] {name}: locust {seconds:.0f} s → {host}", flush=True)
        self.wait_quiet()
        before = self.book.total("locust")
        t0 = time.time()
        with (d / "locust.log").open("wb") as log:
            proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.sampler.locust_pid = proc.pid
        try:
            deadline = time.monotonic() + seconds + 45  # bounded: locust's own stop plus a margin
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGINT)
                    proc.wait(15)
                    break
                if on_tick is not None:
                    on_tick(time.time() - t0)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.sampler.sample_cpu()
            self.sampler.locust_pid = 0
        t1 = time.time()
        samples = [s for f in sorted(d.glob("raw-*.csv")) for s in parse_raw(f.read_text())]
        stats_csv = d / "locust_stats.csv"
        rows = parse_locust_stats(stats_csv.read_text()) if stats_csv.exists() else {}
        cpu = (self.book.total("locust") - before) / HZ
        return LocustRun(name, samples, t0, t1, rows, cpu, command)

    def check_locust(self, run: LocustRun) -> str:
        """A cross-check of the raw samples against locust's own totals (they must agree)."""
        agg = run.locust_rows.get("Aggregated")
        if agg is None:
            return "locust wrote no stats CSV"
        # Responses to requests in flight at the stop reach the raw files after locust's totals.
        if not 0 <= len(run.samples) - agg.requests <= max(10, 0.03 * agg.requests):
            return f"locust counted {agg.requests} requests, the raw samples {len(run.samples)}"
        return ""

    # -- CPU

    def cpu_share(self, label: str, t0: float, t1: float) -> tuple[str, float]:
        """A line on who used the CPUs in [t0, t1], and the share used by processes not ours."""
        pts = [c for c in self.timeline.cpu if t0 - 1.5 <= c[0] <= t1 + 1.5]
        if len(pts) < 2:
            return "", math.nan
        a, b = pts[0], pts[-1]
        total = max(b[2] - a[2], 1)
        busy, lc, sl, ap = b[1] - a[1], b[3] - a[3], b[4] - a[4], b[5] - a[5]
        other = max(busy - lc - sl - ap, 0)
        line = (
            f"{label}: machine {100 * busy / total:.0f}% busy of {NCPU} CPUs — locust {100 * lc / total:.0f}%, "
            f"sluice (supervisor+ingress, activator, autoscaler, queue-proxies) {100 * sl / total:.0f}%, "
            f"apps {100 * ap / total:.0f}%, other processes {100 * other / total:.0f}%; load average {loadavg()}"
        )
        self.cpu_lines.append(line)
        return line, other / total

    def others_now(self, seconds: float = 2.0) -> float:
        """Share of all CPUs used by processes not ours over the next `seconds`."""
        assert self.sampler is not None
        self.sampler.sample_cpu()
        a = self.timeline.cpu[-1]
        time.sleep(seconds)
        self.sampler.sample_cpu()
        b = self.timeline.cpu[-1]
        total = max(b[2] - a[2], 1)
        return max((b[1] - a[1]) - (b[3] - a[3]) - (b[4] - a[4]) - (b[5] - a[5]), 0) / total

    def wait_quiet(self) -> None:
        """Bounded wait for the machine to be quiet (another engineer may be running tests)."""
        limit = float(self.args.quiet_below)
        deadline = time.monotonic() + float(self.args.quiet_wait)
        others = self.others_now()
        while others > limit and time.monotonic() < deadline:
            print(
                f"    other processes use {others * 100:.0f}% of the CPUs; waiting for < {limit * 100:.0f}%", flush=True
            )
            others = self.others_now(5.0)

    def add_row(self, scenario: str, stats: Stats, target: Target, note: str = "", others: float = math.nan) -> None:
        row = Row(scenario, stats, target, evaluate(stats, target), note, others)
        self.rows.append(row)
        print(
            f"    {scenario}: {stats.rate:.1f} req/s, p50 {stats.p50:.1f} p95 {stats.p95:.1f} p99 {stats.p99:.1f} "
            f"max {stats.max:.1f} ms, {stats.errors} errors → {row.verdict.label}"
            + ("" if row.verdict.ok else " (" + "; ".join(row.verdict.misses) + ")"),
            flush=True,
        )

    # -- scenarios

    def paced_env(self, path: str, stages: tuple[Stage, ...], headers: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "SLUICE_BENCH_PATH": path,
            "SLUICE_BENCH_STAGES": json.dumps([[s.seconds, s.rate] for s in stages]),
            "SLUICE_BENCH_PER_USER_RATE": str(self.plan.per_user_rate),
            "SLUICE_BENCH_HEADERS": json.dumps(headers or {}),
        }

    def app_process(self, port: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ) | {"PORT": str(port), "HOST": "127.0.0.1"}
        return subprocess.Popen(
            [sys.executable, str(self.app_dir / APP.name)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=str(self.app_dir),
        )  # fmt: skip

    def baseline(self, seconds: float) -> None:
        """The handler alone ("plain deployment"): examples/autoscale.py on a free port, hit directly."""
        port = free_port()
        app = self.app_process(port)
        assert self.sampler is not None
        self.sampler.extra_apps = [app.pid]
        try:
            wait_until("the app", lambda: http_ok("127.0.0.1", port, "/healthz"), 10, 0.02)
            p = self.plan
            run = self.locust(
                "dataplane-app", "dataplane_probe.py", f"http://127.0.0.1:{port}",
                self.paced_env("/" + HANDLER, (Stage(seconds, p.probe_rate),)), seconds,
            )  # fmt: skip
        finally:
            stop_process(app)
            self.sampler.extra_apps = []
        stats = summarize(run.samples, run.t0 + p.warmup, run.t0 + seconds - 1)
        self.handler_p95 = stats.p95
        others = self.finish_run(run, "dataplane: app (plain)")
        self.add_row("dataplane: app (plain)", stats, Target(KNATIVE_PLAIN, 100.0, p.probe_rate, 0.01), others=others)

    def finish_run(self, run: LocustRun, label: str, check: bool = True) -> float:
        problem = self.check_locust(run) if check else ""
        if problem:
            self.notes.append(f"{label}: {problem}")
        share, others = self.cpu_share(label, run.t0, run.t1)
        print(f"    {share}\n    locust used {run.cpu_seconds:.1f} CPU-s in {run.t1 - run.t0:.0f} s", flush=True)
        plot_run(self.out / f"{run.name}.png", label, run, self.timeline)
        return others

    def dataplane(self) -> None:
        p = self.plan
        assert self.sluice is not None
        sl = self.sluice
        act = str(sl.state().get("activator", ""))
        qp_ip = ready_pod_ip(sl, "bench-serve")
        proxy_rev = next((str(r["name"]) for r in revisions(sl.status(), "bench-proxy")), "")
        if not (act and qp_ip and proxy_rev):
            raise RuntimeError(f"dataplane: activator {act!r}, queue-proxy {qp_ip!r}, revision {proxy_rev!r}")
        ingress = f"http://127.0.0.1:{sl.port}"
        headers = {"Knative-Serving-Revision": proxy_rev, "Knative-Serving-Namespace": "default"}
        targets = [
            ("queue-proxy", "dataplane-qp", f"http://{qp_ip}:8012", "/" + HANDLER, {}, SLUICE_PROBE),
            ("activator+queue-proxy", "dataplane-act", f"http://{act}:8012", "/" + HANDLER, headers, SLUICE_PROBE),
            ("ingress→queue-proxy", "dataplane-ing-qp", ingress, "/bench-serve/" + HANDLER, {}, KNATIVE_PROBE),
            ("ingress→activator+qp", "dataplane-ing-act", ingress, "/bench-proxy/" + HANDLER, {}, KNATIVE_PROBE),
        ]
        for label, name, host, path, hdrs, allowance in targets:
            env = self.paced_env(path, (Stage(p.probe_seconds, p.probe_rate),), hdrs)
            run = self.locust(name, "dataplane_probe.py", host, env, p.probe_seconds)
            stats = summarize(run.samples, run.t0 + p.warmup, run.t0 + p.probe_seconds - 1)
            target = Target(allowance, self.handler_p95, p.probe_rate, 0.01)
            others = self.finish_run(run, f"dataplane: {label}")
            self.add_row(f"dataplane: {label}", stats, target, others=others)

    def rollout(self) -> None:
        p = self.plan
        assert self.sluice is not None
        sl = self.sluice
        applied: dict[str, float] = {}

        def tick(elapsed: float) -> None:
            if "apply" not in applied and elapsed >= p.rollout_apply_at:
                applied["apply"] = time.time()
                self.timeline.events.append((time.time(), "apply rev 2"))
                threading.Thread(
                    target=lambda: applied.setdefault("out", sl.cli("apply", "-f", str(man2)).returncode)
                ).start()
            if "apply" in applied and "ready2" not in applied:
                revs = revisions(sl.status(), "bench-roll")
                new = [r for r in revs if r.get("name", "").endswith("00002")]
                if new and new[0].get("traffic") == 100 and new[0].get("ready_pods", 0) >= 1:
                    applied["ready2"] = time.time()
                    self.timeline.events.append((time.time(), "rev 2 takes 100%"))

        man2 = self.out / "manifests" / "bench-roll-v2.json"
        env = self.paced_env("/bench-roll/" + HANDLER, (Stage(p.rollout_seconds, p.rollout_rate),))
        run = self.locust("rollout", "rollout_probe.py", f"http://127.0.0.1:{sl.port}", env, p.rollout_seconds,
                          on_tick=tick)  # fmt: skip
        stats = summarize(run.samples, run.t0 + p.warmup, run.t0 + p.rollout_seconds - 1)
        took = applied.get("ready2", math.nan) - applied.get("apply", math.nan)
        note = f"new revision serving 100% {took:.1f} s after apply" if not math.isnan(took) else "rollout not seen"
        self.notes.append(f"rollout-probe: {note}")
        during = summarize(run.samples, applied.get("apply", run.t0), applied.get("ready2", run.t1) + 5)
        self.notes.append(
            f"rollout-probe: from apply to 5 s after the switch: {during.requests} requests, p95 {during.p95:.1f} ms, "
            f"max {during.max:.1f} ms, {during.errors} errors"
        )
        others = self.finish_run(run, "rollout-probe")
        target = Target(SLUICE_ROLLOUT, self.handler_p95, p.rollout_rate, 0.01)
        self.add_row("rollout-probe", stats, target, note, others)

    def load_test(self) -> None:
        p = self.plan
        assert self.sluice is not None
        sl = self.sluice
        try:
            wait_until("bench-load at zero pods", lambda: service_at_zero(sl.status(), "bench-load"), 60)
        except TimeoutError:
            self.notes.append("load-test: bench-load still had a pod at the start (expected 0)")
        seconds = stages_duration(p.load_stages)
        env = self.paced_env("/bench-load/" + HANDLER, p.load_stages)
        run = self.locust("load-test", "load_test.py", f"http://127.0.0.1:{sl.port}", env, seconds)
        stats = summarize(run.samples, run.t0, run.t0 + seconds)
        target = Target(SLUICE_LOAD, self.handler_p95, max_ms=10_000.0)
        others = self.finish_run(run, "load-test")
        self.add_row("load-test (from zero)", stats, target, others=others)
        t = run.t0
        for i, st in enumerate(p.load_stages):
            part = summarize(run.samples, t + (p.warmup if i == 0 else 0), t + st.seconds)
            self.notes.append(
                f"load-test step {i + 1} ({st.rate:g} req/s for {st.seconds:g} s): {part.rate:.1f} req/s, "
                f"p50 {part.p50:.1f} p95 {part.p95:.1f} p99 {part.p99:.1f} max {part.max:.1f} ms, {part.errors} errors"
            )
            t += st.seconds
        first = min(run.samples, key=lambda s: s.start) if run.samples else None
        if first is not None:
            self.notes.append(f"load-test: the first request (the cold start) took {first.ms:.0f} ms")

    def app_startup(self, n: int, rounds: int) -> list[float]:
        """Spawn-to-first-/healthz-200 of `n` examples/autoscale.py started at once, ms."""
        times: list[float] = []
        for _ in range(rounds):
            ports = [free_port() for _ in range(n)]
            started = [(time.monotonic(), self.app_process(port), port) for port in ports]
            try:
                for t0, _proc, port in started:
                    wait_until("app start", lambda port=port: http_ok("127.0.0.1", port, "/healthz"), 20, 0.005)  # type: ignore[misc]
                    times.append((time.monotonic() - t0) * 1000)
            finally:
                for _t0, proc, _port in started:
                    stop_process(proc)
            time.sleep(1)
        return times

    def scale_from_zero(self) -> None:
        p = self.plan
        assert self.sluice is not None
        sl = self.sluice
        n = p.cold_services
        alone = self.app_startup(1, 3)
        together = self.app_startup(n, max(1, p.cold_rounds))
        base = percentile(sorted(together), 95)
        self.notes.append(
            f"scale-from-zero: examples/autoscale.py's own start-up (spawn → /healthz 200): alone p50 "
            f"{percentile(sorted(alone), 50):.0f} ms; {n} at once p50 {percentile(sorted(together), 50):.0f} "
            f"p95 {base:.0f} ms (the baseline)"
        )
        colds: list[Sample] = []
        errors = 0
        worst = 0.0
        for rnd in range(1, p.cold_rounds + 1):
            names = [f"zero-{rnd}-{i}" for i in range(1, n + 1)]
            files = [self.out / "manifests" / f"{nm}.json" for nm in names]
            for nm, f in zip(names, files, strict=True):
                f.write_text(service_manifest(nm, cold_annotations(), str(self.app_dir)))
            res = sl.cli("apply", *[x for f in files for x in ("-f", str(f))])
            if res.returncode != 0:
                raise RuntimeError(f"apply failed: {res.stderr}")
            # As Knative's scale-from-zero test: the services start with one pod and are woken once
            # the autoscaler has scaled them down to zero (6 s window + the grace period).
            wait_until(
                "the cold services scaled to zero",
                lambda names=names: all(scaled_down_to_zero(sl.status(), nm) for nm in names),  # type: ignore[misc]
                120,
            )
            time.sleep(2)  # let the controller and the API settle
            env = {"SLUICE_BENCH_TARGETS": json.dumps([f"/{nm}/" for nm in names])}
            run = self.locust(f"scale-from-zero-{rnd}", "scale_from_zero.py", f"http://127.0.0.1:{sl.port}",
                              env, 60, users=n)  # fmt: skip
            colds += [s for s in run.samples if s.name.startswith("cold ")]
            errors += sum(1 for s in run.samples if not s.ok)
            worst = max(worst, self.finish_run(run, f"scale-from-zero round {rnd}", check=False))
            time.sleep(3)
        ms = sorted(s.ms for s in colds if s.ok)
        stats = Stats(
            requests=len(colds), errors=errors, seconds=0.0, rate=0.0, p50=percentile(ms, 50),
            p95=percentile(ms, 95), p99=percentile(ms, 99), max=ms[-1] if ms else math.nan,
            error_codes={0: errors} if errors else {},
        )  # fmt: skip
        self.notes.append(
            "scale-from-zero: time to first 200 per service (ms): " + ", ".join(f"{s.ms:.0f}" for s in colds)
        )
        self.add_row(f"scale-from-zero ({n} at once)", stats, Target(COLD_EXTRA_MS, base), others=worst)
        plot_cold(self.out / "scale-from-zero-times.png", colds, alone, together)

    # -- the whole run

    def manifests(self) -> list[Path]:
        d = self.out / "manifests"
        d.mkdir(parents=True, exist_ok=True)
        ex = str(self.app_dir)
        one = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1",
               "autoscaling.knative.dev/initial-scale": "1"}  # fmt: skip
        docs = {
            # SKS Serve once the pod exists: the ingress reaches the queue-proxy directly.
            "bench-serve": one | {"autoscaling.knative.dev/target-burst-capacity": "0"},
            # The activator always in the path.
            "bench-proxy": one | {"autoscaling.knative.dev/target-burst-capacity": "-1"},
            # Stock settings (TBC 200: the activator stays in the path at this size), one pod or more.
            "bench-roll": {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/initial-scale": "1"},
            # From zero, Knative's default windows; target 10 (Knative's 100 scaled like the rate).
            "bench-load": {
                "autoscaling.knative.dev/target": "10",
                "autoscaling.knative.dev/max-scale": "10",
                "autoscaling.knative.dev/initial-scale": "0",
            },
        }
        paths = []
        for name, ann in docs.items():
            path = d / f"{name}.json"
            path.write_text(service_manifest(name, ann, ex, {"BENCH_VERSION": "1"}))
            paths.append(path)
        ann = docs["bench-roll"]
        (d / "bench-roll-v2.json").write_text(service_manifest("bench-roll", ann, ex, {"BENCH_VERSION": "2"}))
        return paths

    def run(self) -> int:
        sel = self.args.scenario or list(SCENARIOS)
        port = self.args.port or free_port()
        net = self.args.net or free_net()
        # Services start at zero unless annotated; scale-to-zero within seconds for the cold rounds.
        overrides = [
            "allow-zero-initial-scale=true",
            "initial-scale=0",
            "scale-to-zero-grace-period=6s",
            *self.args.autoscaler_config,
        ]
        self.sluice = sl = Sluice(self.out / "sluice-home", port, net, self.manifests(), overrides)
        self.commands.append(" ".join(shlex.quote(a) for a in sl.argv))
        self.sampler = Sampler(sl, self.book, self.timeline)
        print(f"== load average {loadavg()}; sluice local up on 127.0.0.1:{port}, net {net}; results in {self.out}")
        t_start = time.time()
        sl.start()
        self.sampler.start()
        try:
            wait_until(
                "sluice local and the bench services",
                lambda: all(service_ready(sl.status(), s) for s in ("bench-serve", "bench-proxy", "bench-roll",
                                                                     "bench-load"))
                and bool(ready_pod_ip(sl, "bench-serve")) and bool(ready_pod_ip(sl, "bench-proxy")),
                90,
            )  # fmt: skip
            time.sleep(2)
            base_seconds = self.plan.probe_seconds if "dataplane-probe" in sel else min(self.plan.probe_seconds, 20)
            print("== baseline: the app alone (plain deployment)")
            self.baseline(base_seconds)
            for scenario in SCENARIOS:
                if scenario not in sel:
                    continue
                print(f"== {scenario}  (load average {loadavg()})", flush=True)
                {"dataplane-probe": self.dataplane, "rollout-probe": self.rollout, "load-test": self.load_test,
                 "scale-from-zero": self.scale_from_zero}[scenario]()  # fmt: skip
        finally:
            self.sampler.stopping.set()
            self.sampler.join(5)
            sl.stop()
        self.cpu_share("whole run", t_start, time.time())
        plot_overview(self.out / "overview.png", self.timeline, t_start)
        self.report(sel)
        return 0 if all(r.verdict.ok for r in self.rows) else 1

    def report(self, sel: list[str]) -> None:
        table = format_table(self.rows)
        print("\n" + table + "\n")
        for n in self.notes:
            print(f"  - {n}")
        lines = [
            f"# Locust scenarios on sluice local — {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
            "",
            f"Machine: {NCPU} CPUs, load average at the end {loadavg()}; scenarios {', '.join(sel)}; "
            f"{'quick' if self.args.quick else 'full'} mode; app: examples/autoscale.py"
            f"{' with TCP_NODELAY (--app-nodelay)' if self.args.app_nodelay else ''}.",
            f"Handler p95 (the app alone, the baseline): {self.handler_p95:.1f} ms.",
            "",
            format_table(self.rows, markdown=True),
            "",
            "A `!` after others' CPU: processes that are not this benchmark's used more than "
            f"{DISTURBED * 100:.0f}% of the machine during that run (a disturbed row).",
            "",
            "Notes:",
            *[f"- {n}" for n in self.notes],
            "",
            "CPU (from /proc; shares of all CPUs):",
            *[f"- {c}" for c in self.cpu_lines],
            "",
            "Commands (as run):",
            "",
            f"    python {' '.join(shlex.quote(a) for a in sys.argv)}",
            *[f"    {c}" for c in self.commands],
            "",
        ]
        (self.out / "summary.md").write_text("\n".join(lines))
        print(f"\nwrote {self.out / 'summary.md'} and the PNGs beside it")


def nodelay_app(directory: Path) -> Path:
    """A copy of examples/autoscale.py with TCP_NODELAY on its sockets (`--app-nodelay`).

    The sample writes the status line + headers and the body in two sends; with Nagle on, the
    body waits for the peer's ACK of the first, which a delayed ACK holds for ~40 ms. This copy
    shows what setting `disable_nagle_algorithm = True` on its handler would change.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = APP.read_text()
    anchor = '    protocol_version = "HTTP/1.1"\n'
    if anchor not in text:
        raise RuntimeError(f"--app-nodelay: {APP} no longer has {anchor.strip()!r}")
    text = text.replace(anchor, anchor + "    disable_nagle_algorithm = True  # bench/locust/run.py --app-nodelay\n")
    (directory / APP.name).write_text(text)
    return directory


def cold_annotations() -> dict[str, str]:
    # One pod at creation, scaled to zero after a 6 s window, one pod when woken. (A revision
    # created at zero and never scaled has no decision yet, desired -1: Knative's poke (§4.6) only
    # acts on a decided 0, so its first wake-up waits for the 2 s decider tick.)
    return {
        "autoscaling.knative.dev/initial-scale": "1",
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/max-scale": "1",
        "autoscaling.knative.dev/window": "6s",
    }


def http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ---- plots ------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _status_series(timeline: Timeline, t0: float, t1: float) -> dict[str, list[tuple[float, int, bool, int]]]:
    """Per revision: (seconds since t0, ready pods, panic, desired) while [t0, t1]."""
    out: dict[str, list[tuple[float, int, bool, int]]] = {}
    for t, snap in timeline.status:
        if not t0 - 2 <= t <= t1 + 2:
            continue
        for svc in snap.get("services") or ():
            for rev in svc.get("revisions") or ():
                out.setdefault(str(rev.get("name")), []).append(
                    (t - t0, int(rev.get("ready_pods") or 0), bool(rev.get("panic")), int(rev.get("desired") or 0))
                )
    return out


def plot_run(path: Path, title: str, run: LocustRun, timeline: Timeline) -> None:
    plt = _pyplot()
    bins = per_second(run.samples, run.t0)
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    xs = [b.t for b in bins]
    ax = axes[0]
    for q, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        ax.plot(xs, [getattr(b, q) for b in bins], label=q, color=color)
    ax.set_ylabel("latency ms")
    ax.set_yscale("log")
    ax.legend(loc="upper right")
    ax.set_title(title)
    axes[1].plot(xs, [b.requests for b in bins], label="responses/s", color="tab:blue")
    axes[1].plot(xs, [b.errors for b in bins], label="errors/s", color="tab:red")
    axes[1].set_ylabel("req/s")
    axes[1].legend(loc="upper right")
    series = _status_series(timeline, run.t0, run.t1)
    watched = [r for r, pts in series.items() if any(p[1] or p[3] for p in pts)]
    for rev in watched:
        pts = series[rev]
        axes[2].step([p[0] for p in pts], [p[1] for p in pts], where="post", label=rev)
        axes[3].step([p[0] for p in pts], [1 if p[2] else 0 for p in pts], where="post", label=rev)
    axes[2].set_ylabel("ready pods")
    axes[3].set_ylabel("panic")
    axes[3].set_yticks([0, 1], ["no", "yes"])
    if watched:
        axes[2].legend(loc="upper left", fontsize="small")
    shown = [(t, label) for t, label in timeline.events if run.t0 <= t <= run.t1]
    for i, (t, label) in enumerate(shown):
        for ax in axes:
            ax.axvline(t - run.t0, color="grey", linestyle="--")
        y = 0.92 - 0.1 * i
        axes[0].annotate(" " + label, (t - run.t0, y), xycoords=("data", "axes fraction"), fontsize="small")
    axes[3].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_cold(path: Path, colds: list[Sample], alone: list[float], together: list[float]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(colds)), [s.ms for s in colds], color="tab:blue", label="sluice: time to first 200")
    ax.axhline(percentile(sorted(together), 95), color="tab:orange", label="app start-up alone, 5 at once (p95)")
    ax.axhline(percentile(sorted(together), 95) + COLD_EXTRA_MS, color="tab:red", linestyle="--", label="target")
    ax.axhline(percentile(sorted(alone), 50), color="tab:green", linestyle=":", label="app start-up alone, one")
    ax.set_xticks(range(len(colds)), [s.name.split("/")[1] for s in colds], rotation=60, fontsize="small")
    ax.set_ylabel("ms")
    ax.legend(fontsize="small")
    ax.set_title("scale-from-zero")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_overview(path: Path, timeline: Timeline, t0: float) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    cpu = timeline.cpu
    for i in range(1, len(cpu)):
        a, b = cpu[i - 1], cpu[i]
        total = max(b[2] - a[2], 1)
        x = b[0] - t0
        axes[0].bar(x, 100 * (b[3] - a[3]) / total, width=1.0, color="tab:purple")
        axes[0].bar(x, 100 * (b[4] - a[4]) / total, bottom=100 * (b[3] - a[3]) / total, width=1.0, color="tab:blue")
    axes[0].set_ylabel("% of all CPUs")
    axes[0].set_title("locust (purple) and sluice components (blue) CPU")
    axes[0].plot([c[0] - t0 for c in cpu[1:]],
                 [100 * (b[1] - a[1]) / max(b[2] - a[2], 1) for a, b in itertools.pairwise(cpu)],
                 color="black", linewidth=0.8, label="machine busy")  # fmt: skip
    axes[0].legend(loc="upper right")
    series = _status_series(timeline, t0, math.inf)
    for rev, pts in series.items():
        if any(p[1] for p in pts):
            axes[1].step([p[0] for p in pts], [p[1] for p in pts], where="post", label=rev)
    axes[1].set_ylabel("ready pods")
    axes[1].set_xlabel("seconds since start")
    axes[1].legend(loc="upper left", fontsize="x-small", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    ap.add_argument("--quick", action="store_true", help="short durations, one cold round: a smoke run")
    ap.add_argument("--rate", type=float, default=200, help="probe / rollout rate, req/s (Knative: 1000)")
    ap.add_argument("--probe-seconds", type=float, default=45, help="seconds per dataplane target")
    ap.add_argument("--load-step-seconds", type=float, default=40, help="seconds per load-test step (Knative: 120)")
    ap.add_argument("--cold-rounds", type=int, default=3, help="scale-from-zero rounds of 5 services")
    ap.add_argument("--per-user-rate", type=float, default=4.0, help="req/s of one locust user")
    ap.add_argument("--workers", type=int, default=1, help="locust processes (--processes N) when one is short")
    ap.add_argument("--quiet-below", type=float, default=0.25, help="others' CPU share to wait for (0..1)")
    ap.add_argument("--quiet-wait", type=float, default=60, help="longest wait for it before each locust run, s")
    ap.add_argument("--app-nodelay", action="store_true", help="run a copy of the sample app with TCP_NODELAY")
    ap.add_argument("--port", type=int, default=0, help="ingress port (default: a free one)")
    ap.add_argument("--net", default="", help="loopback block for sluice local (default: a free 127.N)")
    ap.add_argument("--autoscaler-config", action="append", default=[], metavar="K=V")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default bench/results/locust-<UTC>)")
    return ap.parse_args(argv)


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = (
        args.out or ROOT / "bench" / "results" / f"locust-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out, make_plan(args))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops everything too, like Ctrl-C
    try:
        return bench.run()
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench failed: {exc} (see {out})", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
