"""The process kubelet: runs each pod bound to the local node as two processes, the user's command
and a queue-proxy (`python -m proxy`), on its own loopback address (CONTRACT.md §2.2).

- Both are started by the zygote (zygote.py) when it runs: the queue-proxy forked from its
  pre-imported copy, the user's command exec'd by it; without one, exec'd from here.
- The pod's environment is resolved like Kubernetes does (values, downward-API fieldRefs,
  `$(VAR)` expansion in command/args). Two local adjustments: the user port is allocated per pod
  (a user process binding 0.0.0.0:$PORT would otherwise clash across pods), so `PORT`, the
  queue-proxy's `USER_PORT` and the port inside `SERVING_READINESS_PROBE` are rewritten; and the
  queue-proxy gets `SLUICE_BIND_HOST=<pod IP>` so 8012/8022/9090 hold per pod.
- Readiness is the queue-proxy container's readiness probe (`GET :8012/` with
  `K-Network-Probe: queue`, §2.2), polled every 100 ms until it first passes, then at the
  probe's period; the result goes to the pod's Ready condition, from which Endpoints are built.
- A container that exits is restarted with an exponential back-off (restartPolicy Always);
  its last output is reported in `lastState.terminated.message`, and `waiting:
  CrashLoopBackOff` while backing off.
- Deletion (a deletionTimestamp): preStop `GET :8022/wait-for-drain` (§2.11), SIGTERM, SIGKILL
  when the grace period runs out, then the deletion is confirmed with grace 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controller.caches import Caches
from .controller.events import EventRecorder
from .controller.informer import key_of
from .controller.names import NODE_NAME, QUEUE_ADMIN_PORT, QUEUE_CONTAINER, meta, now_rfc3339
from .kube import ALL, KubeError
from .procs import AddressPool, Child, http_get, port_busy, spawn
from .zygote import ZygoteClient, ZygoteExecError

__all__ = ["Kubelet", "KubeletOptions"]

log = logging.getLogger("sluice.local.kubelet")

WORKING_DIR_ANNOTATION = "local.sluice.dev/working-dir"
HOST_IP = "127.0.0.1"
_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
# Variables of the supervisor's environment a pod must not inherit.
_NOT_INHERITED = ("KUBECONFIG", "SLUICE_KUBECONFIG", "SLUICE_HOME")
# A zygote that exited is started again at most this often (a zygote that cannot start is not
# retried for every pod; meanwhile queue-proxies are exec'd).
_ZYGOTE_RESTART = 10.0


@dataclass(frozen=True, slots=True)
class KubeletOptions:
    log_dir: Path
    drain_quiet_period: float = 2.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    python: str = sys.executable
    extra_qp_env: tuple[tuple[str, str], ...] = ()
    # Queue-proxies are forked from a pre-imported one (zygote.py) rather than exec'd: ~100 ms
    # less on a cold start's path (issue 19). Linux only (PR_SET_PDEATHSIG).
    zygote: bool = sys.platform.startswith("linux")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (unknown references stay as they are)."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def resolve_env(container: dict[str, Any], pod: dict[str, Any], ip: str) -> dict[str, str]:
    m = meta(pod)
    fields = {
        "metadata.name": m.get("name", ""),
        "metadata.namespace": m.get("namespace", ""),
        "status.podIP": ip,
        "status.hostIP": HOST_IP,
        "spec.nodeName": NODE_NAME,
    }
    out: dict[str, str] = {}
    for e in container.get("env") or ():
        if "value" in e:
            out[e["name"]] = expand(str(e.get("value") or ""), out)
        else:
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
            out[e["name"]] = fields.get(ref, "")
    return out


def rewrite_probe_port(text: str, container_port: int, local_port: int) -> str:
    if not text:
        return text
    try:
        probes = json.loads(text)
    except ValueError:
        return text
    for probe in probes if isinstance(probes, list) else [probes]:
        for handler in ("httpGet", "tcpSocket", "grpc"):
            h = probe.get(handler) if isinstance(probe, dict) else None
            if isinstance(h, dict) and h.get("port") == container_port:
                h["port"] = local_port
    return json.dumps(probes, separators=(",", ":"))


@dataclass
class _Container:
    name: str
    child: Child | None = None
    restarts: int = 0
    last_exit: dict[str, Any] | None = None
    waiting: str = "ContainerCreating"
    waiting_message: str = ""
    started_at: str = ""


class _PodRun:
    """The processes and probe state of one pod."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.k = kubelet
        self.pod = pod
        self.ns, self.name = key_of(pod)
        self.ip = ""
        self.user_port = 0
        self.ready = False
        self.terminating = False
        self.start_time = now_rfc3339()
        containers = (pod.get("spec") or {}).get("containers") or []
        self.user_spec = containers[0] if containers else {}
        self.qp_spec: dict[str, Any] = next((c for c in containers if c.get("name") == QUEUE_CONTAINER), {})
        self.user = _Container(self.user_spec.get("name", "user-container"))
        self.qp = _Container(QUEUE_CONTAINER)
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.log_dir = kubelet.opts.log_dir / f"{self.ns}_{self.name}"
        self.last_status: dict[str, Any] | None = None

    # ---- set-up ------------------------------------------------------------------------

    def _container_port(self) -> int:
        ports = self.user_spec.get("ports") or []
        return int(ports[0].get("containerPort", 8080)) if ports else 8080

    def _serving_port(self) -> int:
        for p in self.qp_spec.get("ports") or ():
            if p.get("name") == "queue-port":
                return int(p.get("containerPort", 8012))
        return 8012

    def _allocate(self) -> None:
        """An address whose queue-proxy ports are free (something else on the machine may hold
        one of them, e.g. on 0.0.0.0); the busy one is reported if none is found."""
        pool = self.k.pool
        busy = ""
        for _ in range(4):
            ip = pool.take()
            taken = [p for p in (self._serving_port(), QUEUE_ADMIN_PORT, 9090, 9091) if port_busy(ip, p)]
            if not taken:
                self.ip = ip
                self.user_port = pool.take_port()
                return
            busy = f"port {taken[0]} is already in use on {ip} (another process holds it, maybe on 0.0.0.0)"
            log.warning("%s/%s: %s", self.ns, self.name, busy)
        raise OSError(busy)

    def _base_env(self) -> dict[str, str]:
        return self.k.base_env()

    def _user_argv_env(self) -> tuple[list[str], dict[str, str]]:
        env = resolve_env(self.user_spec, self.pod, self.ip)
        env["PORT"] = str(self.user_port)
        env["SLUICE_POD_IP"] = self.ip
        argv = [expand(a, env) for a in (self.user_spec.get("command") or []) + (self.user_spec.get("args") or [])]
        return argv, self._base_env() | env

    def _qp_env(self) -> dict[str, str]:
        env = resolve_env(self.qp_spec, self.pod, self.ip)
        env["USER_PORT"] = str(self.user_port)
        env["SERVING_READINESS_PROBE"] = rewrite_probe_port(
            env.get("SERVING_READINESS_PROBE", ""), self._container_port(), self.user_port
        )
        env["SLUICE_BIND_HOST"] = self.ip
        env["SLUICE_DRAIN_QUIET_PERIOD"] = f"{self.k.opts.drain_quiet_period:g}"
        return self._base_env() | env | dict(self.k.opts.extra_qp_env)

    def _cwd(self) -> str | None:
        wd = self.user_spec.get("workingDir") or (meta(self.pod).get("annotations") or {}).get(WORKING_DIR_ANNOTATION)
        return str(wd) if wd else None

    async def _start(self, c: _Container) -> None:
        log_path = self.log_dir / f"{c.name}.log"
        if c.restarts and log_path.exists():
            # The previous run's output stays readable (`kubectl logs --previous`).
            log_path.replace(self.log_dir / f"{c.name}.previous.log")
        if c is self.user:
            argv, env = self._user_argv_env()
            cwd = self._cwd()
            image = str(self.user_spec.get("image", ""))
        else:
            argv, env, cwd = [self.k.opts.python, "-m", "proxy"], self._qp_env(), None
            image = str(self.qp_spec.get("image", ""))
        field = f"spec.containers{{{c.name}}}"
        if not c.restarts:
            self.event(
                "Normal",
                "Pulled",
                f'Container image "{image}" is not pulled: sluice local runs the container as a local process',
                field,
            )
        try:
            if not argv:
                raise OSError(f"container {c.name!r} has no command (sluice local pulls no images)")
            c.child = await self.k.start_process(f"{self.name}/{c.name}", argv, env, log_path, cwd)
        except OSError as exc:
            c.child = None
            c.waiting = "RunContainerError"
            c.waiting_message = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            c.last_exit = {
                "exitCode": 128,
                "reason": "StartError",
                "message": c.waiting_message,
                "finishedAt": now_rfc3339(),
            }
            self.event("Warning", "Failed", f"Error: {c.waiting_message}", field)
            return
        c.waiting = ""
        c.waiting_message = ""
        c.started_at = now_rfc3339()
        self.event("Normal", "Created", f"Created container: {c.name}", field)
        self.event("Normal", "Started", f"Started container {c.name}", field)

    # ---- the pod's life ----------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str, container: str = "") -> None:
        self.k.event(self.pod, type_, reason, message, container)

    async def run(self) -> None:
        self.k.event(
            self.pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {self.ns}/{self.name} to {NODE_NAME}",
            recorder=self.k.scheduler_events,
        )
        try:
            self._allocate()
        except (OSError, RuntimeError) as exc:
            self.error = str(exc)
            self.user.waiting = "CreateContainerError"
            self.user.waiting_message = self.error
            await self.push_status()
            return
        # In the pod spec's order, as the kubelet does (Knative lists the user container first):
        # the app's start is the longer one on a cold start's path.
        await self._start(self.user)
        await self._start(self.qp)
        await self.push_status()
        await asyncio.gather(self._supervise(self.user), self._supervise(self.qp), self._probe_loop())

    async def _supervise(self, c: _Container) -> None:
        delay = self.k.opts.backoff_initial
        while not self.terminating:
            if c.child is not None:
                code = await c.child.proc.wait()
                if self.terminating:
                    return
                ran = asyncio.get_running_loop().time() - c.child.started
                c.last_exit = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "message": c.child.tail(),
                    "startedAt": c.started_at,
                    "finishedAt": now_rfc3339(),
                }
                log.warning("%s/%s: container %s exited with %s", self.ns, self.name, c.name, code)
                if ran > 60:
                    delay = self.k.opts.backoff_initial
            c.restarts += 1
            uid = meta(self.pod).get("uid", "")
            self.event(
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {c.name} in pod {self.name}_{self.ns}({uid})",
                f"spec.containers{{{c.name}}}",
            )
            c.waiting = "CrashLoopBackOff"
            c.waiting_message = f"back-off {delay:g}s restarting failed container={c.name} pod={self.name}"
            c.child = None
            self.ready = False
            await self.push_status()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.k.opts.backoff_max)
            if self.terminating:
                return
            await self._start(c)
            await self.push_status()

    async def _probe_loop(self) -> None:
        probe = self.qp_spec.get("readinessProbe") or {}
        http = probe.get("httpGet") or {}
        port = int(http.get("port") or self._serving_port())
        path = str(http.get("path") or "/")
        headers = {h["name"]: h["value"] for h in http.get("httpHeaders") or ()}
        headers["User-Agent"] = "kube-probe/1.30"
        period = float(probe.get("periodSeconds") or 1)
        timeout = float(probe.get("timeoutSeconds") or 1)
        # The queue-proxy runs the user's aggressive probe for up to 10 s inside one answer.
        if not probe.get("periodSeconds"):
            timeout = 11.0
        failure_threshold = int(probe.get("failureThreshold") or 3)
        success_threshold = int(probe.get("successThreshold") or 1)
        successes = failures = 0
        while not self.terminating:
            both_up = self.user.child is not None and self.qp.child is not None
            status, body = (0, b"") if not both_up else await http_get(self.ip, port, path, headers, timeout)
            ok = 200 <= status < 400
            if ok:
                successes, failures = successes + 1, 0
                if not self.ready and successes >= success_threshold:
                    self.ready = True
                    await self.push_status()
            else:
                successes, failures = 0, failures + 1
                if self.ready and (failures >= failure_threshold or not both_up):
                    # Reported when a ready pod loses readiness (start-up probing is not news).
                    detail = f"HTTP probe failed with statuscode: {status}" if status else "no answer"
                    self.event(
                        "Warning",
                        "Unhealthy",
                        f"Readiness probe failed: {detail}",
                        f"spec.containers{{{QUEUE_CONTAINER}}}",
                    )
                    self.ready = False
                    await self.push_status()
            del body
            await asyncio.sleep(period if self.ready else 0.1)

    async def terminate(self, grace: float) -> None:
        """preStop drain, SIGTERM, SIGKILL after the grace period (§2.11)."""
        self.terminating = True
        self.ready = False
        deadline = time.monotonic() + grace
        if self.qp.child is not None and self.qp.child.running and self.ip:
            await http_get(self.ip, QUEUE_ADMIN_PORT, "/wait-for-drain", {"User-Agent": "kube-lifecycle"}, grace)
        await self.kill(max(0.1, deadline - time.monotonic()))
        if self.task is not None:
            self.task.cancel()

    async def kill(self, grace: float) -> None:
        self.terminating = True
        for c in (self.user, self.qp):
            if c.child is not None and c.child.running:
                self.event("Normal", "Killing", f"Stopping container {c.name}", f"spec.containers{{{c.name}}}")
        children = [c.child for c in (self.user, self.qp) if c.child is not None]
        await asyncio.gather(*(child.stop(grace) for child in children))
        if self.ip:
            self.k.pool.release(self.ip)
        if self.user_port:
            self.k.pool.release_port(self.user_port)

    # ---- status ----------------------------------------------------------------------------

    def _container_status(self, c: _Container, image: str) -> dict[str, Any]:
        running = c.child is not None and c.child.running
        state: dict[str, Any]
        if running:
            state = {"running": {"startedAt": c.started_at}}
        else:
            waiting: dict[str, Any] = {"reason": c.waiting or "ContainerCreating"}
            if c.waiting_message:
                waiting["message"] = c.waiting_message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": c.name,
            "image": image,
            "imageID": "",
            "ready": bool(running and self.ready),
            "started": running,
            "restartCount": c.restarts,
            "state": state,
        }
        if c.child is not None:
            out["containerID"] = f"process://{c.child.pid}"
        if c.last_exit is not None:
            out["lastState"] = {"terminated": c.last_exit}
        return out

    def status(self) -> dict[str, Any]:
        ready = "True" if self.ready and not self.terminating else "False"
        started = self.user.child is not None or self.user.last_exit is not None
        st: dict[str, Any] = {
            "phase": "Running" if started or self.ip else "Pending",
            "hostIP": HOST_IP,
            "startTime": self.start_time,
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                self._container_status(self.user, self.user_spec.get("image", "")),
                self._container_status(self.qp, self.qp_spec.get("image", "")),
            ],
        }
        if self.ip:
            st["podIP"] = self.ip
            st["podIPs"] = [{"ip": self.ip}]
        if self.error:
            st["message"] = self.error
        return st

    async def push_status(self) -> None:
        if self.terminating:
            # The embedded API completes a graceful pod deletion on any write to the pod (a
            # deviation from Kubernetes, which waits for the kubelet's grace-0 delete), so a
            # terminating pod's status is left alone; the endpoints already exclude it.
            return
        st = self.status()
        if st == self.last_status:
            return
        try:
            await self.k.caches.kube.merge_patch(ALL.PODS, self.ns, self.name, {"status": st}, "status")
            self.last_status = st
        except KubeError as exc:
            if exc.status != 404:
                log.warning("pod %s/%s status: %s", self.ns, self.name, exc)


class Kubelet:
    def __init__(self, caches: Caches, pool: AddressPool, opts: KubeletOptions) -> None:
        self.caches = caches
        self.pool = pool
        self.opts = opts
        self.pods: dict[tuple[str, str], _PodRun] = {}
        self._terminations: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        caches.subscribe(self._wake.set)
        self.events = EventRecorder(caches.kube, "kubelet")
        self.scheduler_events = EventRecorder(caches.kube, "default-scheduler")
        # Events go out from one task, in order, off the pods' start-up path.
        self._events: asyncio.Queue[tuple[EventRecorder, dict[str, Any], str, str, str, str]] = asyncio.Queue()
        self._event_task: asyncio.Task[None] | None = None
        self.zygote: ZygoteClient | None = None
        self._zygote_started = -1e9

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kubelet")
        self._event_task = asyncio.get_running_loop().create_task(self._send_events(), name="kubelet-events")

    def event(
        self,
        pod: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        field_path: str = "",
        recorder: EventRecorder | None = None,
    ) -> None:
        self._events.put_nowait((recorder or self.events, pod, type_, reason, message, field_path))

    async def _send_events(self) -> None:
        while True:
            recorder, pod, type_, reason, message, field_path = await self._events.get()
            try:
                await recorder.event(pod, type_, reason, message, field_path)
            except Exception:
                log.exception("recording event %s", reason)

    def base_env(self) -> dict[str, str]:
        """What a pod's processes inherit of the supervisor's environment."""
        return {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED and not k.startswith("SLUICE_")}

    async def start_zygote(self) -> None:
        """Starts the queue-proxy zygote with the queue-proxies' common environment."""
        if not self.opts.zygote:
            return
        self._zygote_started = time.monotonic()
        zygote = ZygoteClient(
            self.opts.python, "proxy", self.base_env() | dict(self.opts.extra_qp_env), self.opts.log_dir / "zygote.log"
        )
        try:
            await zygote.start()
        except OSError as exc:
            log.warning("queue-proxy zygote: %s; queue-proxies are exec'd", exc)
            return
        self.zygote = zygote

    async def start_process(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: str | None
    ) -> Child:
        """Forks a queue-proxy from the zygote when it can stand for exec'ing `argv`, has the zygote
        exec any other program, and execs from here when there is no zygote."""
        zygote = self.zygote
        if zygote is not None and not zygote.alive and time.monotonic() - self._zygote_started > _ZYGOTE_RESTART:
            log.warning("queue-proxy zygote exited; starting another")
            await zygote.stop()
            self.zygote = None
            await self.start_zygote()
            zygote = self.zygote
        if zygote is not None and zygote.alive:
            run_module = zygote.fits(argv, env)
            args = argv[3:] if run_module else argv
            try:
                return Child(name, await zygote.fork(args, env, log_path, cwd, exec_=not run_module), log_path)
            except ZygoteExecError:
                raise
            except OSError as exc:
                log.warning("queue-proxy zygote: %s; exec'ing %s", exc, name)
        return await spawn(name, argv, env, log_path, cwd)

    def log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path | None:
        """Where a container's output is captured (the API's pod `log` subresource reads it)."""
        name = f"{container}.previous.log" if previous else f"{container}.log"
        path = self.opts.log_dir / f"{namespace}_{pod}" / name
        return path if path.exists() else None

    def child_pids(self) -> list[tuple[str, int]]:
        out = []
        for run in self.pods.values():
            for c in (run.user, run.qp):
                if c.child is not None and c.child.running:
                    out.append((f"{run.ns}/{run.name}/{c.name}", c.child.pid))
        return out

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("kubelet sync failed")

    def sync(self) -> None:
        seen = set()
        for pod in self.caches.pods.items():
            if (pod.get("spec") or {}).get("nodeName") != NODE_NAME:
                continue
            key = key_of(pod)
            seen.add(key)
            run = self.pods.get(key)
            deleting = bool(meta(pod).get("deletionTimestamp"))
            if run is None and not deleting:
                run = _PodRun(self, pod)
                self.pods[key] = run
                run.task = asyncio.get_running_loop().create_task(run.run(), name=f"pod-{key[1]}")
            elif deleting and key not in self._terminations:
                grace = float(
                    meta(pod).get("deletionGracePeriodSeconds")
                    or (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
                    or 30
                )
                self._terminations[key] = asyncio.get_running_loop().create_task(self._terminate(key, run, grace))
        for key in list(self.pods):
            if key not in seen and key not in self._terminations:
                # Deleted without grace (or by someone else): stop at once.
                run = self.pods.pop(key)
                self._terminations[key] = asyncio.get_running_loop().create_task(self._force(key, run))

    async def _terminate(self, key: tuple[str, str], run: _PodRun | None, grace: float) -> None:
        try:
            if run is not None:
                await run.terminate(grace)
            await self.caches.kube.delete(ALL.PODS, key[0], key[1], grace_period_seconds=0)
        except KubeError as exc:
            log.warning("confirming deletion of pod %s/%s: %s", key[0], key[1], exc)
        finally:
            self.pods.pop(key, None)
            self._terminations.pop(key, None)

    async def _force(self, key: tuple[str, str], run: _PodRun) -> None:
        try:
            await run.kill(1.0)
            if run.task is not None:
                run.task.cancel()
        finally:
            self._terminations.pop(key, None)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops every pod (supervisor shutdown): SIGTERM, SIGKILL after `grace`."""
        if self._event_task is not None:
            self._event_task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._terminations.values()):
            t.cancel()
        runs = list(self.pods.values())
        for run in runs:
            run.terminating = True
        await asyncio.gather(*(run.kill(grace) for run in runs), return_exceptions=True)
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        if self.zygote is not None:
            await self.zygote.stop()
