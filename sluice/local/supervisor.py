"""`sluice local up`: one foreground process that owns everything it starts.

In-process: the embedded Kubernetes API, the mini-controller, the process kubelet and the ingress.
As child processes (own process groups, recorded in `state.json`): the autoscaler, the activator
and every pod's user process and queue-proxy. SIGINT/SIGTERM stop all of them and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activators import ActivatorEndpoints, activator_probe
from .apply import apply_manifests
from .controller import Caches, Controller
from .ingress import Ingress
from .kube import Kube
from .kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig
from .kubelet import Kubelet, KubeletOptions
from .manifest import Manifest
from .procs import AddressPool, Child, port_busy, proc_start_ticks, spawn
from .snapshot import Sampler
from .state import StateDir
from .system import activator_env, autoscaler_env, component_argv, config_initial_scale, create_system_objects
from .webhook import WEBHOOK, admission_hook

__all__ = ["LocalOptions", "StartupError", "StartupInterrupted", "Supervisor"]

log = logging.getLogger("sluice.local")


class StartupError(Exception):
    pass


class StartupInterrupted(StartupError):
    """SIGINT/SIGTERM arrived before the instance was up."""


@dataclass(frozen=True, slots=True)
class LocalOptions:
    state: StateDir
    port: int = 8080
    host: str = "127.0.0.1"
    net: str = "127.77"
    domain: str = "127.0.0.1.sslip.io"
    drain_quiet_period: float = 2.0
    autoscaler_config: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = 60.0
    # Activator replicas behind the activator Service, as in a cluster: one can crash or restart
    # while the other serves (the ingress retries a refused request on it).
    activators: int = 2


# A component that ran this long before exiting restarts without the back-off of a crash loop.
_BACKOFF_RESET_AFTER = 30.0


class _Component:
    """The activator or the autoscaler: restarted with a back-off if it exits."""

    def __init__(
        self, name: str, module: str, env: dict[str, str], log_path: Path, on_exit: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.log_path = log_path
        self.on_exit = on_exit  # called when the process exits (before it is restarted)
        self.child: Child | None = None
        self.restarts = 0
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        self.child = await spawn(self.name, component_argv(self.module), dict(os.environ) | self.env, self.log_path)
        self.task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        delay = 0.0
        while not self.stopping and self.child is not None:
            started = time.monotonic()
            code = await self.child.proc.wait()
            if self.stopping:
                return
            if self.on_exit is not None:
                self.on_exit()
            if time.monotonic() - started >= _BACKOFF_RESET_AFTER:
                delay = 0.0  # it ran fine for a while: a new crash, not a crash loop
            log.warning("%s exited with %s; restarting in %gs:\n%s", self.name, code, delay, self.child.tail())
            await asyncio.sleep(delay)
            # The first restart is immediate, as the kubelet's: a replica down is capacity lost,
            # and with every activator down the ingress holds requests (ingress.py).
            delay = min(max(delay * 2, 1.0), 30.0)
            self.restarts += 1
            self.child = await spawn(self.name, component_argv(self.module), dict(os.environ) | self.env, self.log_path)

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
        if self.child is not None:
            await self.child.stop(5.0)


class Supervisor:
    def __init__(self, opts: LocalOptions) -> None:
        self.opts = opts
        self.state = opts.state
        self.pool = AddressPool(opts.net)
        # `.0.2` for the first activator (as before replicas), `.0.3` the autoscaler, then `.0.4`…
        self.activator_ips = [self.pool.system(2 if i == 0 else 3 + i) for i in range(max(1, opts.activators))]
        self.activator_ip = self.activator_ips[0]
        self.autoscaler_ip = self.pool.system(3)
        self.activators = ActivatorEndpoints(self.activator_ips)
        self.api = EmbeddedAPIServer(host="127.0.0.1", port=0)
        # Knative's validating webhook for what users write (kubectl apply included).
        for plural in ("services", "configurations", "revisions"):
            self.api.add_admission("serving.knative.dev", plural, WEBHOOK, admission_hook)
        self.api_client: Any = None
        self.caches: Caches | None = None
        self.controller: Controller | None = None
        self.kubelet: Kubelet | None = None
        self.ingress: Ingress | None = None
        self.components: list[_Component] = []
        self.sampler: Sampler | None = None
        self.stop_event = asyncio.Event()
        self._state_task: asyncio.Task[None] | None = None
        self.started_at = time.time()

    # ---- checks ----------------------------------------------------------------------------

    def preflight(self) -> None:
        """Reports a busy port with which one, before anything starts."""
        busy = []
        if port_busy(self.opts.host, self.opts.port):
            busy.append(
                f"ingress port {self.opts.host}:{self.opts.port} is already in use (choose another with --port)"
            )
        system: list[tuple[str, tuple[int, ...], str]] = [(ip, (8012, 8013), "activator") for ip in self.activator_ips]
        system.append((self.autoscaler_ip, (8080,), "autoscaler"))
        for ip, ports, who in system:
            for p in ports:
                if port_busy(ip, p):
                    busy.append(
                        f"{who} port {ip}:{p} is already in use (another sluice local? or a process on "
                        f"0.0.0.0:{p}; choose another address block with --net)"
                    )
        if busy:
            raise StartupError("; ".join(busy))

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, manifests: list[Manifest]) -> None:
        self.state.root.mkdir(parents=True, exist_ok=True)
        self.state.logs.mkdir(parents=True, exist_ok=True)
        self.state.samples_file.unlink(missing_ok=True)
        self.preflight()
        await self.api.start()
        self.api.write_kubeconfig(self.state.kubeconfig)
        self.api_client = await kube_client_from_kubeconfig(self.state.kubeconfig)
        kube = Kube(self.api_client)
        await create_system_objects(kube, self.opts.autoscaler_config, self.activator_ips, self.autoscaler_ip)
        self._write_state(ready=False)
        self._state_task = asyncio.get_running_loop().create_task(self._state_loop())
        kubeconfig = self.state.kubeconfig
        self.components = [
            _Component(
                "autoscaler",
                "autoscaler",
                autoscaler_env(kubeconfig, self.autoscaler_ip),
                self.state.logs / "autoscaler.log",
            ),
        ]
        for i, ip in enumerate(self.activator_ips):
            name = "activator" if i == 0 else f"activator-{i}"
            self.components.append(
                _Component(
                    name,
                    "activator",
                    activator_env(kubeconfig, ip, self.autoscaler_ip, pod=f"activator-local-{i}"),
                    self.state.logs / f"{name}.log",
                    on_exit=self.activators.wake,
                )
            )
        for comp in self.components:
            await comp.start()
        self.caches = Caches(kube)
        await self.caches.start()
        initial_scale = config_initial_scale(self.opts.autoscaler_config)
        self.controller = Controller(self.caches, self.activator_ip, self.opts.domain, initial_scale=initial_scale)
        self.controller.start()
        self.kubelet = Kubelet(
            self.caches,
            self.pool,
            KubeletOptions(log_dir=self.state.logs / "pods", drain_quiet_period=self.opts.drain_quiet_period),
        )
        await self.kubelet.start_zygote()
        self.kubelet.start()
        self.api.pod_logs = self.kubelet  # the pod `log` subresource reads what the kubelet captures
        self.ingress = Ingress(self.caches, self.opts.domain)
        try:
            await self.ingress.listen(self.opts.host, self.opts.port)
        except OSError as exc:
            raise StartupError(f"ingress port {self.opts.host}:{self.opts.port}: {exc.strerror or exc}") from None
        await self._wait_activator_ready()
        self.activators.start(kube)
        await self.activators.wait_published()
        if manifests:
            await apply_manifests(kube, manifests)
        self.sampler = Sampler(self)
        self.sampler.start()
        self._write_state(ready=True)

    async def _wait_activator_ready(self) -> None:
        """The activator answers kubelet probes with 200 once its informers are synced and its
        websocket to the autoscaler is up (§1.3): then the data path is complete."""
        deadline = time.monotonic() + self.opts.startup_timeout
        while time.monotonic() < deadline:
            statuses = [await activator_probe(ip, 1.0) for ip in self.activator_ips]
            if all(statuses):
                return
            for comp in self.components:
                if comp.restarts > 2:
                    tail = comp.child.tail() if comp.child is not None else ""
                    raise StartupError(f"{comp.name} keeps exiting; its log ({comp.log_path}) ends with:\n{tail}")
            await asyncio.sleep(0.1)
        raise StartupError(
            f"the activator did not become ready within {self.opts.startup_timeout:g}s; see {self.state.logs}"
        )

    def processes(self) -> list[dict[str, Any]]:
        out = []
        for comp in self.components:
            if comp.child is not None and comp.child.running:
                out.append({"name": comp.name, "pid": comp.child.pid, "start": proc_start_ticks(comp.child.pid)})
        if self.kubelet is not None:
            for name, pid in self.kubelet.child_pids():
                out.append({"name": name, "pid": pid, "start": proc_start_ticks(pid)})
        return out

    def _write_state(self, ready: bool) -> None:
        self.state.write_json(
            self.state.state_file,
            {
                "ready": ready,
                "supervisor": {"pid": os.getpid(), "start": proc_start_ticks(os.getpid())},
                "started_at": self.started_at,
                "ingress": f"http://{self.opts.host}:{self.opts.port}",
                "domain": self.opts.domain,
                "net": self.opts.net,
                "api": self.api.url,
                "kubeconfig": str(self.state.kubeconfig),
                "activator": self.activator_ip,
                "activators": self.activator_ips,
                "autoscaler": self.autoscaler_ip,
                "logs": str(self.state.logs),
                "processes": self.processes(),
            },
        )

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._write_state(ready=self.sampler is not None)

    async def run(self, manifests: list[Manifest], on_ready: Any = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)
        try:
            # Ctrl-C during start-up stops it at once (not after the activator's 60 s readiness
            # wait); shutdown() then stops whatever had been started.
            starting = loop.create_task(self.start(manifests))
            stopping = loop.create_task(self.stop_event.wait())
            await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                # Cancelled until it takes: on Python 3.11 asyncio.wait_for (in the start-up's
                # probes) swallows a cancellation that lands just as its inner await completes.
                while not starting.done():
                    starting.cancel()
                    await asyncio.wait((starting,), timeout=0.2)
                if not starting.cancelled():
                    starting.exception()  # retrieved: whatever it was, the user asked to stop
                raise StartupInterrupted("interrupted during start-up")
            stopping.cancel()
            starting.result()
            if on_ready is not None:
                on_ready(self)
            await self.stop_event.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self._state_task is not None:
            self._state_task.cancel()
        if self.sampler is not None:
            await self.sampler.stop()
        await self.activators.stop()
        if self.ingress is not None:
            await self.ingress.close()
        if self.controller is not None:
            await self.controller.stop()
        if self.kubelet is not None:
            await self.kubelet.stop(grace=3.0)
        await asyncio.gather(*(c.stop() for c in self.components), return_exceptions=True)
        if self.caches is not None:
            await self.caches.stop()
        if self.api_client is not None:
            with contextlib.suppress(Exception):
                await self.api_client.close()
        await self.api.stop()
        self.state.state_file.unlink(missing_ok=True)
        self.state.status_file.unlink(missing_ok=True)
