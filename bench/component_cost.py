"""Per-pod cost of the activator and the autoscaler (issue 19, target 1): start-up CPU and idle memory.

Runs the two control-plane components as their images do (`python -m autoscaler`, `python -m
activator`) against an embedded Kubernetes API in this process, with the system namespace, the
ConfigMaps and the Services `sluice local` creates (`sluice.local.system`), and the environment
`sluice local` gives them, except that the autoscaler elects leaders as the image does
(`SLUICE_LEADER_ELECTION` unset). The activator's websocket goes to that autoscaler. Each on its own
loopback address (127.77.0.2 the activator, 127.77.0.3 the autoscaler), so Knative's fixed ports hold.

Per start and component:

  ready_ms   spawn → ready: the activator's kubelet probe answers 200 (informers synced and the
             autoscaler websocket up, §1.3); the autoscaler logged "autoscaler started".
  cpu_ms     CPU time of the process (all threads) to ready (schedstat, ns resolution).
  rss_mb     VmRSS after --idle-s idle past ready (the activator reports every second, §3.8).
  uss_mb     the private part of it (Private_Clean + Private_Dirty): what a second replica on the
             same node adds when the image's files are shared.

--modules: one more start with `-X importtime`: the number of modules each component imported by
the end of the idle period, the heaviest top-level packages (summed self time and count), and
whether kubernetes_asyncio's generated models, aiohttp.web, yaml, OpenTelemetry were loaded.

--tracemalloc: one more start under tracemalloc (which slows it and adds its own memory; only the
breakdown counts): after the idle period, the Python allocations still held, summed per top-level
package of the allocating file (stdlib and site-packages alike), the ten largest.

--repo LABEL=PATH (repeatable; default this checkout): the components run from PATH (cwd first on
sys.path), so an export of another commit (`git archive main | tar -x -C /tmp/main`) is measured in
the same session with the same interpreter and the same API server. Runs alternate between repos.

  python bench/component_cost.py [--runs 5] [--idle-s 5] [--repo main=/tmp/main --repo branch=.]
                                 [--modules] [--python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from pod_cost import memory_kb, schedstat_ns  # noqa: E402  (a sibling script)

ACTIVATOR_IP, AUTOSCALER_IP = "127.77.0.2", "127.77.0.3"
HEAVY = {
    "kubernetes_asyncio.client.models": "kubernetes_asyncio.client.models.v1_pod",
    "kubernetes_asyncio (all APIs)": "kubernetes_asyncio.client.api.batch_v1_api",
    "aiohttp.web": "aiohttp.web",
    "yaml": "yaml",
    "opentelemetry": "opentelemetry",
    "jsonschema": "jsonschema",
}


async def activator_ready() -> bool:
    """The kubelet's probe of the activator (sluice local's `activator_probe`)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ACTIVATOR_IP, 8012), 0.5)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class Component:
    def __init__(self, module: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.module = module
        self.started = time.monotonic()
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        self.ready_ms = 0.0
        self.cpu_ms = 0.0

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.module} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.module == "activator":
                ok = await activator_ready()
            else:
                ok = b"autoscaler started" in self.log.read_bytes()
            if ok:
                self.ready_ms = (time.monotonic() - self.started) * 1000.0
                self.cpu_ms = schedstat_ns(self.proc.pid) / 1e6
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.module} not ready within {timeout:g}s:\n{self.tail()}")
            await asyncio.sleep(0.005)

    def tail(self) -> str:
        return self.log.read_bytes()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def import_summary(text: str) -> str:
    """Module count, the heaviest top-level packages and the heavy modules, from -X importtime."""
    modules: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            modules[m.group(2)] = int(m.group(1))
    per_top: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, self_us in modules.items():
        top = per_top[name.split(".")[0]]
        top[0] += self_us
        top[1] += 1
    heaviest = sorted(per_top.items(), key=lambda kv: -kv[1][0])[:8]
    loaded = [label for label, mod in HEAVY.items() if mod in modules]
    return (
        f"{len(modules)} modules; heaviest (self ms, count): "
        + ", ".join(f"{top} {us / 1000:.0f}/{n}" for top, (us, n) in heaviest)
        + f"; heavy loaded: {', '.join(loaded) or 'none'}"
    )


# Runs `-m <module>` under tracemalloc; SIGUSR2 writes the held allocations per package to $TM_OUT.
TRACEMALLOC_WRAPPER = """
import os, runpy, signal, sys, tracemalloc
tracemalloc.start()
def dump(*_):
    per = {}
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        path = stat.traceback[0].filename
        parts = path.split("/site-packages/", 1)[-1].split("/")
        top = parts[0] if "/site-packages/" in path or not path.startswith("/") else "stdlib:" + parts[-1]
        if "/lib/python3" in path and "/site-packages/" not in path:
            top = "stdlib:" + path.rsplit("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
        per[top] = per.get(top, 0) + stat.size
    with open(os.environ["TM_OUT"], "w") as f:
        total = sum(per.values())
        f.write(f"traced {total / 1048576:.1f} MB: " + ", ".join(
            f"{k} {v / 1048576:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:10]))
signal.signal(signal.SIGUSR2, dump)
module = sys.argv[1]
sys.argv = [module]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


async def main_async(args: argparse.Namespace, repos: list[tuple[str, Path]], work: Path) -> int:
    from sluice.local.kube import Kube
    from sluice.local.kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig
    from sluice.local.system import activator_env, autoscaler_env, create_system_objects

    server = EmbeddedAPIServer(port=0, crd_paths=None)
    await server.start()
    kubeconfig = server.write_kubeconfig(work / "kubeconfig")
    client = await kube_client_from_kubeconfig(kubeconfig)
    await create_system_objects(Kube(client), {}, [ACTIVATOR_IP], AUTOSCALER_IP)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    a_env = keep | autoscaler_env(kubeconfig, AUTOSCALER_IP) | {"PYTHONDONTWRITEBYTECODE": "1"}
    a_env.pop("SLUICE_LEADER_ELECTION")  # the image elects leaders (Knative always does)
    x_env = keep | activator_env(kubeconfig, ACTIVATOR_IP, AUTOSCALER_IP) | {"PYTHONDONTWRITEBYTECODE": "1"}
    extra = dict(kv.split("=", 1) for kv in args.extra_env)
    a_env |= extra
    x_env |= extra
    print(f"python={args.python} runs={args.runs} idle={args.idle_s:g}s load={loadavg()}", flush=True)
    results: dict[tuple[str, str], list[tuple[float, float, int, int]]] = defaultdict(list)

    def tm_env(prefix: str, label: str) -> dict[str, str]:
        return {"TM_OUT": str(work / f"{prefix}-{label}.tm")}

    async def start_both(cwd: Path, label: str, extra: list[str]) -> tuple[Component, Component]:
        def argv(module: str) -> list[str]:
            if extra == ["tracemalloc"]:
                return [args.python, "-c", TRACEMALLOC_WRAPPER, module]
            return [args.python, *extra, "-m", module]

        scaler = Component("autoscaler", argv("autoscaler"), a_env | tm_env("a", label), cwd, work / f"a-{label}.log")
        try:
            await scaler.wait_ready()
            act = Component("activator", argv("activator"), x_env | tm_env("x", label), cwd, work / f"x-{label}.log")
        except BaseException:
            scaler.stop()
            raise
        try:
            await act.wait_ready()
        except BaseException:
            act.stop()
            scaler.stop()
            raise
        return scaler, act

    try:
        for _ in range(args.runs):
            for label, cwd in repos:
                scaler, act = await start_both(cwd, label, [])
                try:
                    await asyncio.sleep(args.idle_s)
                    for comp in (scaler, act):
                        rss_kb, uss_kb = memory_kb(comp.proc.pid)
                        results[(label, comp.module)].append((comp.ready_ms, comp.cpu_ms, rss_kb, uss_kb))
                finally:
                    act.stop()
                    scaler.stop()
        for (label, module), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ready, cpu, rss, uss = ([row[i] for row in rows] for i in range(4))
            print(
                f"{module:10s} {label:8s} ready_ms p50={statistics.median(ready):.0f} | cpu_ms p50="
                f"{statistics.median(cpu):.0f} | rss_mb p50={statistics.median(rss) / 1024:.1f} "
                f"max={max(rss) / 1024:.1f} | uss_mb p50={statistics.median(uss) / 1024:.1f}",
                flush=True,
            )
        if args.modules:
            for label, cwd in repos:
                scaler, act = await start_both(cwd, f"{label}-it", ["-X", "importtime"])
                await asyncio.sleep(args.idle_s)
                act.stop()
                scaler.stop()
                for comp in (scaler, act):
                    print(f"{comp.module:10s} {label:8s} {import_summary(comp.log.read_text(errors='replace'))}")
        if args.tracemalloc:
            for label, cwd in repos:
                scaler, act = await start_both(cwd, f"{label}-tm", ["tracemalloc"])
                await asyncio.sleep(args.idle_s)
                for comp, prefix in ((scaler, "a"), (act, "x")):
                    comp.proc.send_signal(signal.SIGUSR2)
                    out = work / f"{prefix}-{label}-tm.tm"
                    for _ in range(100):
                        await asyncio.sleep(0.1)
                        if out.exists() and out.stat().st_size:
                            break
                    print(f"{comp.module:10s} {label:8s} {out.read_text() if out.exists() else 'no dump'}", flush=True)
                act.stop()
                scaler.stop()
        print(f"load at end={loadavg()}")
    finally:
        await client.close()
        await server.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--repo", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--modules", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--extra-env", action="append", default=[], metavar="K=V", help="added to both components")
    ap.add_argument("--no-compile", action="store_true", help="skip the compileall of each repo")
    args = ap.parse_args()
    args.repo = args.repo or [f"this={REPO}"]
    if not args.no_compile:
        # The components run with PYTHONDONTWRITEBYTECODE=1 as in the image, which compiles at build.
        for _, _, path in (r.partition("=") for r in args.repo):
            subprocess.run(
                [args.python, "-m", "compileall", "-q", "sluice", "activator", "autoscaler"], cwd=path, check=True
            )
    repos = [(label, Path(path).resolve()) for label, _, path in (r.partition("=") for r in args.repo)]
    work = Path(tempfile.mkdtemp(prefix="component-cost-"))
    try:
        return asyncio.run(main_async(args, repos, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
