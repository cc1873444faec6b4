"""Cold start in `sluice local` against the sample app's own start-up time (issue 19, target 4).

Starts `sluice local up` in its own state dir (a free port and 127.N block, as bench/locust/run.py
does), applies `--pool` services running `examples/autoscale.py` with one pod at creation, a 6 s
window and max-scale 1, and then, per trial, takes the next service of the pool once the
autoscaler has scaled it *down* to zero (desired 0, no pod: the state Knative's scale-from-zero
test wakes, see bench/README.md), sends it one request through the ingress
(`GET /<service>/`, http.client, a new connection) and records the time to the complete answer.
The pool lets one service scale down while the others are woken, so a trial does not wait out a
whole window and grace period.

Baseline, measured in the same run: the app's own start-up, spawn of `python autoscale.py` →
first `/healthz` 200 polled every 5 ms, `--trials` times one copy, and (with `--services N`)
N copies started at once.

  python bench/cold_start.py [--trials 20] [--pool 8]         one service woken per trial
  python bench/cold_start.py --services 50 [--rounds 2]       N services woken at once per round
  python bench/cold_start.py --floor 50                       what the machine allows for N pods

`--floor N` measures, without `sluice local`: N app starts back to back, N at once, and N pods'
processes at once as the kubelet starts them (each app plus a queue-proxy forked from the zygote,
ready when the queue-proxy's `K-Network-Probe: queue` answers 200: its probe of the app passed).

Targets (issue 19): p95 first-request latency ≤ app start p95 + 50 ms (one at a time), and
≤ app start p95 (N at once) + 500 ms for N at once. On a machine shared with other work every
figure includes waiting for a CPU: the report prints the load average at start and end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "locust")]

from run import (  # noqa: E402  (bench/locust/run.py: stdlib-only helpers, locust is never imported)
    APP,
    EXAMPLES,
    Sluice,
    cold_annotations,
    free_net,
    free_port,
    http_ok,
    scaled_down_to_zero,
    stop_process,
    wait_until,
)
from scenarios import percentile, service_manifest  # noqa: E402

ONE_EXTRA_MS = 50.0
MANY_EXTRA_MS = 500.0
OVERRIDES = ["scale-to-zero-grace-period=6s"]


def same_python(manifest: str) -> str:
    """The pods run the app with the interpreter the baseline starts (`sys.executable`), not the
    sample's `python3` from PATH: on a machine where that is a shim (pyenv: a shell script that
    execs the interpreter, ~100 ms here) the pods' app would start slower than the baseline's."""
    svc = json.loads(manifest)
    container = svc["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [sys.executable, *container["command"][1:]]
    return json.dumps(svc, indent=1)


def app_startup(n: int, rounds: int) -> list[float]:
    """Spawn → first /healthz 200 of `n` copies of the sample app started at once, ms."""
    times: list[float] = []
    for _ in range(rounds):
        ports = [free_port() for _ in range(n)]
        env = dict(os.environ)
        started = []
        for port in ports:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, APP.name], cwd=str(EXAMPLES), env=env | {"PORT": str(port), "HOST": "127.0.0.1"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            started.append((t0, proc, port))
        try:
            pending = list(started)
            deadline = time.monotonic() + 30
            while pending and time.monotonic() < deadline:
                for item in list(pending):
                    t0, _proc, port = item
                    if http_ok("127.0.0.1", port, "/healthz"):
                        times.append((time.monotonic() - t0) * 1000)
                        pending.remove(item)
                time.sleep(0.005)
            if pending:
                raise TimeoutError(f"{len(pending)} app copies did not answer /healthz within 30 s")
        finally:
            for _t0, proc, _port in started:
                stop_process(proc)
    return times


def _pods_at_once(n: int) -> list[float]:
    """N apps exec'd and N queue-proxies forked from a zygote at once → each pod's readiness as
    the activator probes it (ms from the start of the batch)."""
    import asyncio

    sys.path.insert(0, str(HERE.parent))  # this checkout's sluice, as `python -m` from its root runs
    from sluice.local.procs import Child, http_get, spawn
    from sluice.local.zygote import ZygoteClient

    async def run() -> list[float]:
        logs = Path(tempfile.mkdtemp(prefix="cold-floor-"))
        net = free_net()
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        base |= {k: v for k, v in os.environ.items() if k == "SLUICE_PURE_PYTHON"}
        zygote = ZygoteClient(sys.executable, "proxy", base, logs / "zygote.log")
        await zygote.start()
        await asyncio.sleep(2.0)  # the zygote's imports, before the clock starts
        children: list[Child] = []
        try:
            t0 = time.monotonic()
            pods = []
            for i in range(n):
                ip, port = f"{net}.1.{i + 1}", free_port()
                app_env = base | {"PORT": str(port), "HOST": "127.0.0.1"}
                children.append(
                    await spawn(f"app-{i}", [sys.executable, APP.name], app_env, logs / f"app-{i}.log", str(EXAMPLES))
                )
                probe = {"httpGet": {"path": "/healthz", "port": port, "host": "127.0.0.1"}}
                qp_env = base | {
                    "SERVING_NAMESPACE": "default", "SERVING_SERVICE": f"s{i}", "SERVING_CONFIGURATION": f"s{i}",
                    "SERVING_REVISION": f"s{i}-00001", "SERVING_POD": f"s{i}-pod", "SERVING_POD_IP": ip,
                    "QUEUE_SERVING_PORT": "8012", "QUEUE_SERVING_TLS_PORT": "8112", "USER_PORT": str(port),
                    "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "",
                    "SERVING_LOGGING_LEVEL": "", "SLUICE_BIND_HOST": ip, "SLUICE_DRAIN_QUIET_PERIOD": "0.1",
                    "SERVING_READINESS_PROBE": json.dumps(probe),
                }  # fmt: skip
                log = logs / f"qp-{i}.log"
                children.append(Child(f"qp-{i}", await zygote.fork([], qp_env, log, None), log))
                pods.append(ip)

            async def ready(ip: str) -> float:
                while True:
                    status, _ = await http_get(ip, 8012, "/", {"K-Network-Probe": "queue"}, 12.0)
                    if status == 200:
                        return (time.monotonic() - t0) * 1000
                    await asyncio.sleep(0.005)

            return list(await asyncio.wait_for(asyncio.gather(*(ready(ip) for ip in pods)), 60))
        finally:
            await asyncio.gather(*(c.stop(2.0) for c in children))
            await zygote.stop()
            shutil.rmtree(logs, ignore_errors=True)

    return asyncio.run(run())


def floor(n: int) -> int:
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    one_by_one = app_startup(1, n)
    serial_s = time.monotonic() - t0
    together = app_startup(n, 1)
    pods = _pods_at_once(n)
    print(f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(summary(f"{n} app starts back to back (each)", one_by_one) + f", all {serial_s * 1000:.0f} ms")
    print(summary(f"{n} app starts at once", together))
    print(summary(f"{n} pods' processes at once (app + zygote-forked queue-proxy, ready)", pods))
    return 0


def first_request_ms(port: int, service: str, timeout: float = 60.0) -> tuple[float, int]:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/{service}/")
        resp = conn.getresponse()
        resp.read()
        return (time.monotonic() - t0) * 1000, resp.status
    except OSError:
        return (time.monotonic() - t0) * 1000, 0
    finally:
        conn.close()


def _log_times(path: Path, message: str) -> list[tuple[float, str]]:
    """(Unix time, knative.dev/key) of each JSON log line of `path` with `message`."""
    out: list[tuple[float, str]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if message not in line:
            continue
        try:
            d = json.loads(line)
            t = dt.datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        out.append((t, str(d.get("knative.dev/key", ""))))
    return out


def breakdown(logs: Path, trials: list[tuple[str, float, float]]) -> list[str]:
    """Per trial, from the components' own logs (ms timestamps): request → the autoscaler's
    "scaling from 0 to 1" → the new queue-proxy's "queue-proxy serving" → the answer."""
    scaled = _log_times(logs / "autoscaler.log", "scaling from 0 to 1")
    serving: list[tuple[float, str]] = []
    for qp_log in (logs / "pods").glob("*/queue-proxy.log"):
        serving += _log_times(qp_log, "queue-proxy serving")
    rows = []
    for service, t0, t1 in trials:
        key = f"default/{service}-00001"
        a = min((t for t, k in scaled if k == key and t >= t0 - 0.05), default=None)
        b = min((t for t, k in serving if k == key and t >= t0 - 0.05), default=None)
        if a is None or b is None:
            continue
        rows.append((a - t0, b - a, t1 - b))
    if not rows:
        return ["breakdown: no matching log lines"]

    def col(i: int) -> str:
        v = sorted(r[i] * 1000 for r in rows)
        return f"p50 {percentile(v, 50):.0f} / p95 {percentile(v, 95):.0f} ms"

    return [
        f"breakdown over {len(rows)} trials (component log timestamps, ms resolution):",
        f"  request → autoscaler 'scaling from 0 to 1':       {col(0)}",
        f"  → new queue-proxy listening ('queue-proxy serving'): {col(1)}",
        f"  → answer complete (app ready, readiness, Endpoints, activator): {col(2)}",
    ]


def wake_all(port: int, services: list[str]) -> list[tuple[float, int]]:
    """One request per service, all released at the same instant (a barrier)."""
    results: list[tuple[float, int]] = [(0.0, 0)] * len(services)
    barrier = threading.Barrier(len(services))

    def one(i: int) -> None:
        barrier.wait()
        results[i] = first_request_ms(port, services[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(services))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def summary(label: str, ms: list[float]) -> str:
    s = sorted(ms)
    return f"{label}: n={len(s)} p50={percentile(s, 50):.0f} p95={percentile(s, 95):.0f} max={s[-1]:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="one-at-a-time trials (and app start-ups measured)")
    ap.add_argument("--pool", type=int, default=8, help="services woken in turn (one-at-a-time mode)")
    ap.add_argument("--services", type=int, default=0, help="N services woken at once instead")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the N-at-once mode")
    ap.add_argument("--keep", action="store_true", help="keep the state dir (logs) for a post-mortem")
    ap.add_argument("--floor", type=int, default=0, help="only measure what the machine allows for N pods")
    args = ap.parse_args()
    if args.floor:
        return floor(args.floor)

    load0 = os.getloadavg()[0]
    many = args.services > 0
    app_alone = app_startup(1, args.trials)
    app_many = app_startup(args.services, args.rounds) if many else []

    home = Path(tempfile.mkdtemp(prefix="cold-start-"))
    port, net = free_port(), free_net()
    names = [f"cold-{i}" for i in range(1, (args.services if many else args.pool) + 1)]
    files = []
    for nm in names:
        f = home / f"{nm}.json"
        f.write_text(same_python(service_manifest(nm, cold_annotations(), str(EXAMPLES))))
        files.append(f)
    sl = Sluice(home / "state", port, net, files, OVERRIDES)
    cold: list[float] = []
    trials: list[tuple[str, float, float]] = []  # (service, wall time sent, wall time answered)
    errors = 0
    try:
        sl.start()
        wait_until("sluice local up", lambda: bool(sl.status().get("services")), 120)
        if many:
            for _ in range(args.rounds):
                wait_until(
                    "all services scaled down to zero",
                    lambda: all(scaled_down_to_zero(sl.status(), nm) for nm in names),
                    240,
                )
                time.sleep(1)  # the Endpoints and the activator settle at zero
                sent = time.time()
                for nm, (ms, status) in zip(names, wake_all(port, names), strict=True):
                    trials.append((nm, sent, sent + ms / 1000))
                    if status == 200:
                        cold.append(ms)
                    else:
                        errors += 1
        else:
            for i in range(args.trials):
                nm = names[i % len(names)]
                wait_until(f"{nm} scaled down to zero", lambda nm=nm: scaled_down_to_zero(sl.status(), nm), 240)  # type: ignore[misc]
                time.sleep(1)
                sent = time.time()
                ms, status = first_request_ms(port, nm)
                trials.append((nm, sent, time.time()))
                if status == 200:
                    cold.append(ms)
                else:
                    errors += 1
                print(f"trial {i + 1}: {nm} {status} {ms:.0f} ms", flush=True)
        for line in breakdown(home / "state" / "logs", trials):
            print(line)
    finally:
        sl.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"state kept in {home}")
    load1 = os.getloadavg()[0]
    print(f"load average {load0:.2f} at start, {load1:.2f} at end (measured with other work on the machine)")
    print(summary("app start-up, one copy (spawn → /healthz 200)", app_alone))
    base = percentile(sorted(app_alone), 95)
    extra = ONE_EXTRA_MS
    if many:
        print(summary(f"app start-up, {args.services} copies at once", app_many))
        base = percentile(sorted(app_many), 95)
        extra = MANY_EXTRA_MS
    if not cold:
        print(f"no successful cold request ({errors} errors)")
        return 1
    label = f"{args.services} services woken at once" if many else "one service woken"
    print(summary(f"first request, {label} (request → complete answer)", cold) + f", errors={errors}")
    p95 = percentile(sorted(cold), 95)
    verdict = "PASS" if p95 <= base + extra and errors == 0 else "MISS"
    print(f"target p95 ≤ app start p95 + {extra:.0f} ms = {base + extra:.0f} ms: {p95:.0f} ms, "
          f"{p95 - base:+.0f} ms over the app → {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
