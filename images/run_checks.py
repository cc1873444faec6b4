"""The checks of images/test on built images (podman, as root, in the project venv):

  run_checks.py inspect --out DIR IMAGE...      contents (no shell, no package manager, no pip/setuptools,
                                                 no setuid file, uid 65532, OCI labels, SBOM), sizes per layer
                                                 (gzip, as a registry stores them); SBOMs and sizes.md to DIR
  run_checks.py same-venv IMAGE_A IMAGE_B        the /venvs trees (rootfs stage) of two builds are identical
  run_checks.py run --out DIR QP ACTIVATOR AUTOSCALER
      the queue-proxy --read-only, --user 65532, --cap-drop=ALL in front of a user server sharing its network
      namespace (probes, a proxied request, the protobuf Stat, SIGTERM drain -> exit 0), its ready time and RSS
      beside the same process outside a container; the activator and the autoscaler against an embedded
      API server (`sluice local`'s): informers synced, probes answered, SIGTERM -> exit 0.

Every server listens on 127.0.0.0/8 only (host network namespace, loopback addresses; ports chosen free).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support: the queue-proxy environment the process tests use
LABELS = ("source", "revision", "version", "licenses", "created")
FORBIDDEN_NAMES = {"sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg", "pip", "pip3", "su", "sudo", "gcc"}
FORBIDDEN_PACKAGES = ("pip", "setuptools", "ensurepip", "wheel", "_distutils_hack")
STEP_TIMEOUT = 60.0


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    path = Path(podman("image", "mount", image).strip())
    try:
        yield path
    finally:
        podman("image", "unmount", image, check=False)


def fail(message: str) -> None:
    raise SystemExit(f"FAIL: {message}")


# ---- inspect -------------------------------------------------------------------------------------


def check_tree(image: str, top: Path) -> dict[str, int]:
    """Walks the image's filesystem: forbidden files and modes, and a byte count per top directory."""
    sizes: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = "/" + str(path.relative_to(top))
            st = path.lstat()
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                fail(f"{image}: {rel} is setuid/setgid")
            if name in FORBIDDEN_NAMES and not stat.S_ISDIR(st.st_mode):
                fail(f"{image}: {rel} (a shell, package manager or compiler)")
            if name.split("-")[0] in FORBIDDEN_PACKAGES and ("site-packages" in rel or "python3" in rel):
                fail(f"{image}: {rel} (pip/setuptools bytes)")
            if stat.S_ISREG(st.st_mode):
                key = "/" + str(Path(rel).parts[1]) if len(Path(rel).parts) > 1 else rel
                sizes[key] = sizes.get(key, 0) + st.st_size
    return sizes


def layer_sizes(image: str, workdir: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """`podman save | gzip -c | wc -c`, and per layer (created_by, bytes, gzip bytes)."""
    archive = workdir / "image.tar"
    podman("save", "--format", "docker-archive", "-o", str(archive), image, timeout=300)
    compressed = 0
    with archive.open("rb") as f:
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        while chunk := f.read(1 << 20):
            compressed += len(z.compress(chunk))
        compressed += len(z.flush())
    rows: list[tuple[str, int, int]] = []
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        steps = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
        for step, layer in zip(steps, manifest[0]["Layers"], strict=True):
            data = tar.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as layer_tar:
                tops = sorted({"/" + m.name.lstrip("./").split("/")[0] for m in layer_tar if m.name.strip("./")})
            what = " ".join(tops) + " (" + step.removeprefix("/bin/sh -c #(nop) ").split(" ")[0] + ")"
            rows.append((what, len(data), len(gzip.compress(data, 6))))
    archive.unlink()
    return compressed, rows


def inspect_images(images: list[str], out: Path, expected: dict[str, str]) -> None:
    report = ["| Image | Layer: top directories (instruction) | Size | gzip |", "|---|---|---|---|"]
    totals = []
    for image in images:
        (info,) = json.loads(podman("image", "inspect", image))
        cfg = info["Config"]
        if cfg.get("User") != "65532:65532":
            fail(f"{image}: User is {cfg.get('User')!r}")
        labels = cfg.get("Labels") or {}
        for label in LABELS:
            value = labels.get(f"org.opencontainers.image.{label}")
            if not value or value != expected.get(label, value):
                fail(f"{image}: org.opencontainers.image.{label} is {value!r}, expected {expected.get(label)!r}")
        with mounted(image) as top:
            for shell in ("bin/sh", "usr/bin/sh", "bin/bash"):
                if (top / shell).exists() or (top / shell).is_symlink():
                    fail(f"{image}: /{shell} exists")
            sizes = check_tree(image, top)
            sboms = sorted((top / "sbom").glob("*.cdx.json"))
            if len(sboms) != 1:
                fail(f"{image}: expected one /sbom/*.cdx.json, found {sboms}")
            bom = json.loads(sboms[0].read_text())
            names = {c["name"].lower() for c in bom.get("components", [])}
            if bom.get("bomFormat") != "CycloneDX" or "uvloop" not in names:
                fail(f"{image}: {sboms[0].name} is not a CycloneDX SBOM of the venv ({sorted(names)})")
            if names & set(FORBIDDEN_PACKAGES):
                fail(f"{image}: the SBOM lists {names & set(FORBIDDEN_PACKAGES)}")
            short = image.rsplit("/", 1)[-1].split(":")[0]
            (out / f"{short}.cdx.json").write_bytes(sboms[0].read_bytes())
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            total, rows = layer_sizes(image, Path(tmp))
        totals.append(
            f"{image}: {total / 1e6:.1f} MB compressed (podman save | gzip), "
            f"{sum(r[1] for r in rows) / 1e6:.1f} MB uncompressed, {len(bom['components'])} SBOM components"
        )
        for step, raw, gz in rows:
            report.append(f"| {image.rsplit('/', 1)[-1]} | {step} | {raw / 1e6:.1f} MB | {gz / 1e6:.1f} MB |")
        print(
            f"   {totals[-1]}; by directory: "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6])
        )
        limit = 40e6 if "queue-proxy" in image else 60e6
        if total > limit:
            fail(f"{image}: {total / 1e6:.1f} MB compressed, over {limit / 1e6:.0f} MB")
    (out / "sizes.md").write_text("\n".join(totals) + "\n\n" + "\n".join(report) + "\n")
    print("\n".join(report))


# ---- same-venv -----------------------------------------------------------------------------------


def tree_digest(top: Path) -> dict[str, str]:
    entries = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = "link:" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = f"{oct(st.st_mode)}:" + hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                entries[rel] = oct(st.st_mode)
    return entries


def same_venv(first: str, second: str) -> None:
    with mounted(first) as a, mounted(second) as b:
        da, db = tree_digest(a / "venvs"), tree_digest(b / "venvs")
    diff = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
    whole = hashlib.sha256(json.dumps(da, sort_keys=True).encode()).hexdigest()
    if diff:
        fail(f"{first} and {second}: {len(diff)} of {len(da)} entries of /venvs differ: {diff[:10]}")
    print(f"   {first} == {second}: /venvs, {len(da)} entries, tree sha256 {whole[:16]}")


# ---- run -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(host: str, port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(what: str, probe: Any, timeout: float = STEP_TIMEOUT) -> float:
    """Polls `probe()` until it is true; returns the wall-clock time it first was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if probe():
                return time.time()
        time.sleep(0.01)
    fail(f"{what}: not within {timeout:g} s")
    raise AssertionError


def age_at(pid: int, moment: float) -> float:
    """How long the process had been running at `moment` (time.time()), from its start in /proc (CLOCK_BOOTTIME
    ticks, 10 ms) and /proc/uptime (the same clock): the ready time from exec, for a container as for a process."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK") - (time.time() - moment)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The user container: a few lines of the standard library's http.server, run by the queue-proxy image's own
# interpreter (the image has no shell, but it has Python), read-only and unprivileged too.
USER_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from the user container " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
HARDENED = [
    "--network",
    "host",
    "--read-only",
    "--user",
    "65532:65532",
    "--cap-drop=ALL",
    "--security-opt",
    "no-new-privileges",
]


def qp_env(user_port: int) -> dict[str, str]:
    """The Knative queue-proxy environment of the process tests, on free loopback ports (not 8012/8022/9090:
    the test shares the host's network namespace with whatever else runs there)."""
    from tests.support import qp_env as test_env

    keys = ("QUEUE_SERVING_PORT", "QUEUE_SERVING_TLS_PORT", "SLUICE_ADMIN_PORT", "SLUICE_METRICS_PORT")
    ports = {key: str(free_port()) for key in keys}
    return test_env(user_port, **ports, SLUICE_DRAIN_QUIET_PERIOD="1")


def env_args(env: dict[str, str]) -> list[str]:
    return [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]


class Container:
    def __init__(self, name: str, image: str, args: list[str], command: list[str] | None = None) -> None:
        self.name = f"sluice-images-{os.getpid()}-{name}"
        podman("rm", "-f", self.name, check=False)
        podman("create", "--name", self.name, *args, image, *(command or []))
        self.started = 0.0

    def start(self) -> Container:
        self.started = time.time()
        podman("start", self.name)
        return self

    @property
    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).strip())

    def stop(self, timeout: float = STEP_TIMEOUT) -> tuple[int, float]:
        """SIGTERM (what kubelet sends), then the exit code and the seconds it took."""
        t0 = time.monotonic()
        podman("kill", "--signal", "TERM", self.name)
        code = podman("wait", self.name, timeout=timeout).strip()
        return int(code), time.monotonic() - t0

    def logs(self) -> str:
        # The components log to stderr; podman logs keeps the two streams apart.
        proc = subprocess.run(["podman", "logs", self.name], capture_output=True, text=True, timeout=60, check=False)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def exercise_queue_proxy(env: dict[str, str], label: str) -> None:
    """Probes, a proxied request and the protobuf Stat against a started queue-proxy."""
    from sluice.wire import decode_stat

    port, metrics = int(env["QUEUE_SERVING_PORT"]), int(env["SLUICE_METRICS_PORT"])
    kubelet = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
    status, body = http_get("127.0.0.1", port, "/", kubelet)
    assert (status, body) == (200, b"queue"), f"{label}: readiness probe {status} {body!r}"
    status, body = http_get("127.0.0.1", port, "/", {"K-Network-Probe": "probe", "K-Network-Hash": "h"})
    assert status == 200, f"{label}: network probe {status} {body!r}"
    # A user probe relayed by a legacy mesh: forwarded, but kept out of the stats (CONTRACT §1.2).
    status, body = http_get("127.0.0.1", port, "/healthz", {"K-Kubelet-Probe": "true"})
    assert (status, body) == (200, b"hello from the user container /healthz"), f"{label}: K-Kubelet-Probe {body!r}"
    for _ in range(20):
        status, body = http_get("127.0.0.1", port, "/hello")
        assert (status, body) == (200, b"hello from the user container /hello"), f"{label}: proxied {body!r}"
    deadline = time.monotonic() + 10
    while True:  # the Stat of the last completed window (1 s): wait for one that saw the requests
        status, body = http_get("127.0.0.1", metrics, "/metrics")
        assert status == 200, f"{label}: Stat endpoint {status}"
        stat_ = decode_stat(body)
        if stat_.request_count > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stat_.pod_name == env["SERVING_POD"] and stat_.request_count > 0, f"{label}: Stat {stat_}"


def run_queue_proxy(image: str) -> dict[str, float]:
    user_port = free_port()
    env = qp_env(user_port)
    port = int(env["QUEUE_SERVING_PORT"])
    kubelet = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}

    def ready() -> bool:
        return http_get("127.0.0.1", port, "/", kubelet) == (200, b"queue")

    user = Container(
        "user", image, [*HARDENED, "--entrypoint", "/opt/sluice/bin/python"], ["-c", USER_SERVER, str(user_port)]
    )
    qp = Container("queue-proxy", image, [*HARDENED, *env_args(env)])
    results: dict[str, float] = {}
    try:
        user.start()
        wait_for("the user server", lambda: http_get("127.0.0.1", user_port)[0] == 200)
        qp.start()
        ready_at = wait_for("queue-proxy readiness", ready)
        pid = qp.pid
        results["container_ready_s"] = age_at(pid, ready_at)
        results["container_ready_from_start_s"] = ready_at - qp.started
        exercise_queue_proxy(env, "container")
        results["container_rss_mib"] = rss_mib(pid)
        code, took = qp.stop()
        if code != 0:
            fail(f"queue-proxy exited {code} after SIGTERM:\n{qp.logs()[-3000:]}")
        results["container_drain_s"] = took
        # The same process outside a container, same user server, same checks.
        env = qp_env(user_port)
        port = int(env["QUEUE_SERVING_PORT"])
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy"],
            cwd=ROOT,
            env=os.environ | env | {"PYTHONDONTWRITEBYTECODE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready_at = wait_for("host queue-proxy readiness", ready)
            results["host_ready_s"] = age_at(proc.pid, ready_at)
            exercise_queue_proxy(env, "host")
            results["host_rss_mib"] = rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=STEP_TIMEOUT)
    finally:
        for c in (qp, user):
            c.remove()
    return results


def loopback_ips() -> tuple[str, str]:
    """Two addresses of a random 127.x.y.0/24, so parallel runs (and `sluice local`) do not collide."""
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    return f"{block}.2", f"{block}.3"


async def run_control(activator_image: str, autoscaler_image: str) -> dict[str, float]:
    from sluice.local.kube import Kube
    from sluice.local.kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig
    from sluice.local.system import activator_env, autoscaler_env, create_system_objects

    api = EmbeddedAPIServer(host="127.0.0.1", port=0)  # the Knative CRDs the package ships
    await api.start()
    results: dict[str, float] = {}
    containers: list[Container] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
            kubeconfig.chmod(0o644)  # readable by uid 65532 in the containers
            client = await kube_client_from_kubeconfig(kubeconfig)
            act_ip, as_ip = loopback_ips()
            try:
                await create_system_objects(Kube(client), {}, act_ip, as_ip)
            finally:
                await client.close()
            inside = Path("/etc/sluice/kubeconfig")
            mount = ["-v", f"{kubeconfig}:{inside}:ro,Z"]
            # The kubeconfig names the API server's CA by path (no temp files in the client): the
            # file goes in at the same path, as a cluster's mounted CA would.
            import yaml

            for cluster in yaml.safe_load(kubeconfig.read_text()).get("clusters") or ():
                ca = (cluster.get("cluster") or {}).get("certificate-authority")
                if ca:
                    os.chmod(ca, 0o644)  # a public certificate, readable by uid 65532
                    mount += ["-v", f"{ca}:{ca}:ro,Z"]
            autoscaler = Container(
                "autoscaler", autoscaler_image, [*HARDENED, *mount, *env_args(autoscaler_env(inside, as_ip))]
            )
            activator = Container(
                "activator", activator_image, [*HARDENED, *mount, *env_args(activator_env(inside, act_ip, as_ip))]
            )
            containers = [activator, autoscaler]
            probe = {"User-Agent": "kube-probe/1.30"}
            autoscaler.start()
            # "autoscaler started" is logged once every informer has synced (autoscaler/app.py).
            await asyncio.to_thread(
                wait_for, "autoscaler informers synced", lambda: "autoscaler started" in autoscaler.logs()
            )
            at = await asyncio.to_thread(
                wait_for, "autoscaler probe", lambda: http_get(as_ip, 8080, "/", probe)[0] == 200
            )
            results["autoscaler_ready_s"] = at - autoscaler.started
            activator.start()
            # The activator answers kubelet probes once its informers have synced and its websocket to the
            # autoscaler is up (CONTRACT §1.3, §7).
            at = await asyncio.to_thread(
                wait_for, "activator readiness", lambda: http_get(act_ip, 8012, "/", probe)[0] == 200
            )
            results["activator_ready_s"] = at - activator.started
            results["activator_rss_mib"] = rss_mib(activator.pid)
            results["autoscaler_rss_mib"] = rss_mib(autoscaler.pid)
            for name, c in (("activator", activator), ("autoscaler", autoscaler)):
                code, took = await asyncio.to_thread(c.stop)
                if code != 0:
                    fail(f"{name} exited {code} after SIGTERM:\n{c.logs()[-3000:]}")
                results[f"{name}_stop_s"] = took
        except BaseException:
            for c in containers:
                print(f"--- {c.name} log (tail):\n{c.logs()[-4000:]}", file=sys.stderr)
            raise
        finally:
            for c in containers:
                c.remove()
            await api.stop()
    return results


def run(images: list[str], out: Path) -> None:
    qp, activator, autoscaler = images
    t0 = time.monotonic()
    results = run_queue_proxy(qp)
    results |= asyncio.run(run_control(activator, autoscaler))
    results["run_s"] = time.monotonic() - t0
    for key, value in results.items():
        print(f"   {key:32} {value:8.3f}")
    (out / "run.json").write_text(json.dumps(results, indent=2) + "\n")
    # No worse than outside a container; generous margins, the machine is shared.
    if results["container_ready_s"] > 1.5 * results["host_ready_s"] + 0.5:
        fail(
            f"queue-proxy ready in {results['container_ready_s']:.3f} s in the image, "
            f"{results['host_ready_s']:.3f} s outside"
        )
    if results["container_rss_mib"] > 1.2 * results["host_rss_mib"] + 2:
        fail(
            f"queue-proxy RSS {results['container_rss_mib']:.1f} MiB in the image, "
            f"{results['host_rss_mib']:.1f} MiB outside"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("inspect", "run"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("images", nargs="+")
        if name == "inspect":
            s.add_argument("--labels", nargs="*", default=[], help="NAME=VALUE: expected OCI label values")
    s = sub.add_parser("same-venv")
    s.add_argument("images", nargs=2)
    args = p.parse_args()
    if args.command == "inspect":
        inspect_images(args.images, args.out, dict(label.split("=", 1) for label in args.labels))
    elif args.command == "same-venv":
        same_venv(*args.images)
    else:
        run(args.images, args.out)


if __name__ == "__main__":
    main()
