"""The README's main job: `sluice local` serving the autoscale sample, showing
scale-from-zero, a burst that scales out, and the return to zero.

Runs `sluice local up` as a child (its own state dir, so it touches nothing else),
drives traffic on loopback only, prints what the data plane does, writes a PNG
report, and stops everything it started (also on Ctrl-C). Bounded: about 1.5 min.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "examples" / "autoscale.yaml"
URL_PATH = "/autoscale/"


def sluice(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(home), *args]


def status(home: Path) -> dict[str, Any]:
    out = subprocess.run(sluice(home, "status", "--json"), capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        return {}
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def revision(home: Path) -> dict[str, Any]:
    for svc in status(home).get("services", []):
        for rev in svc.get("revisions", []):
            return dict(rev)
    return {}


def line(rev: dict[str, Any]) -> str:
    desired = rev.get("desired")
    return (
        f"pods ready/desired {rev.get('ready_pods', 0)}/{'-' if desired is None else desired}  "
        f"SKS {rev.get('mode', '?'):5}  panic {'yes' if rev.get('panic') else 'no '}  "
        f"queue {rev.get('queue_depth', 0)}"
    )


async def get(port: int, path: str) -> tuple[int, float]:
    """One GET over a fresh connection; (status, seconds)."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    code = int(data[9:12]) if data.startswith(b"HTTP/1.") else 0
    return code, time.monotonic() - t0


async def burst(port: int, concurrency: int, seconds: float, sleep_ms: int) -> list[int]:
    codes: list[int] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            try:
                code, _ = await get(port, f"{URL_PATH}?sleep={sleep_ms}")
            except OSError:
                code = 0
            codes.append(code)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


def wait_for(home: Path, what: str, check: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    rev: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rev = revision(home)
        text = line(rev) if rev else "starting…"
        if text != last:
            print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)
            last = text
        if rev and check(rev):
            return rev
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8080, help="ingress port (default 8080)")
    ap.add_argument("--report", type=Path, default=Path("sluice-demo.png"))
    ap.add_argument("--net", default="127.77", help="loopback block for the activator, autoscaler and pods")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
    print(f"== sluice local up -f {MANIFEST.relative_to(ROOT)}  (state in {home})")
    up = subprocess.Popen(
        sluice(
            home, "up", "-f", str(MANIFEST), "--port", str(args.port), "--net", args.net,
            # Start at zero and come back quickly, so the demo shows both ends.
            "--autoscaler-config", "allow-zero-initial-scale=true",
            "--autoscaler-config", "initial-scale=0",
            "--autoscaler-config", "scale-to-zero-grace-period=6s",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # (Unix time, label) of each phase, drawn on the report.
    phases: list[tuple[float, str]] = []
    try:
        print("== waiting for the service (scaled to zero: requests will go to the activator)")
        wait_for(home, "the service", lambda r: r.get("ready") == "True" and r.get("ready_pods", 0) == 0, 60)
        phases.append((time.time(), "idle, zero pods"))
        time.sleep(3)

        print("== first request to a service with no pod (scale from zero)")
        phases.append((time.time(), "1 request: scale from zero"))
        code, took = asyncio.run(get(args.port, f"{URL_PATH}?sleep=10"))
        print(f"  GET {URL_PATH} → {code} in {took * 1000:.0f} ms (activator held it while a pod started)")

        print("== a burst: 40 concurrent clients for 12 s, 300 ms requests, target 10 per pod")
        phases.append((time.time(), "burst: 40 clients (panic, scale out)"))

        async def burst_and_watch() -> list[int]:
            task = asyncio.create_task(burst(args.port, 40, 12.0, 300))
            last = ""
            while not task.done():
                rev = await asyncio.to_thread(revision, home)
                text = line(rev)
                if text != last:
                    print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)
                    last = text
                await asyncio.sleep(1)
            return await task

        codes = asyncio.run(burst_and_watch())
        ok = sum(1 for c in codes if c == 200)
        print(f"  {len(codes)} requests, {ok} × 200, {len(codes) - ok} other")

        print("== idle: back to zero after the stable window and the grace period")
        phases.append((time.time(), "cool down to zero"))
        wait_for(home, "scale to zero", lambda r: r.get("desired", 1) == 0 and r.get("ready_pods", 1) == 0, 90)
        phases.append((time.time(), "idle"))
        time.sleep(2)
        marks = [a for t, label in phases for a in ("--phase", f"{t:.3f}={label}")]
        subprocess.run(sluice(home, "report", "-o", str(args.report), *marks), check=False, timeout=60)
        print(f"== report: {args.report}")
        return 0 if ok == len(codes) else 1
    except (TimeoutError, KeyboardInterrupt) as exc:
        print(f"demo stopped: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    finally:
        # Ctrl-C semantics for the child: it stops everything it started.
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        print("== stopped")


if __name__ == "__main__":
    sys.exit(main())
