"""`sluice local ...`: run Knative Services on this machine (see `sluice local --help`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .commands.cli import HANDLERS as COMMAND_HANDLERS
from .commands.cli import add_parsers as add_command_parsers
from .manifest import ManifestError, load_manifests
from .state import StateDir, default_home
from .status import render_status

__all__ = ["main"]

PROG = "sluice local"
EXAMPLE_HELP = "a sample Service shipped with Sluice, e.g. autoscale (repeatable; `--example list` lists them)"


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from sluice.entrypoint import version_text

        from .data import PackageDataError, knative_serving_commit

        try:
            knative = f"Knative Serving manifests from knative/serving@{knative_serving_commit()[:12]}"
        except PackageDataError as exc:
            knative = f"Knative manifests missing: {exc}"
        print(f"{version_text('sluice')}\n{knative}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sluice", description="Sluice: a Python data plane for Knative Serving.")
    top.add_argument("--version", action=_Version, nargs=0, help="show the version and the pinned Knative release")
    top_sub = top.add_subparsers(dest="group", required=True)
    local = top_sub.add_parser("local", help="run Knative Services on this machine, without Kubernetes")
    local.add_argument(
        "--home", type=Path, default=None, help="state directory (default $SLUICE_HOME/local or ~/.sluice/local)"
    )
    sub = local.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start (in the foreground; Ctrl-C stops everything) and apply manifests")
    up.add_argument("-f", "--filename", action="append", default=[], help="Service manifest (repeatable)")
    up.add_argument("--example", action="append", default=[], metavar="NAME", help=EXAMPLE_HELP)
    up.add_argument("--port", type=int, default=8080, help="ingress port (default 8080)")
    up.add_argument("--host", default="127.0.0.1", help="ingress address (default 127.0.0.1)")
    up.add_argument("--net", default="127.77", help="loopback block for activator/autoscaler/pods (default 127.77)")
    up.add_argument("--domain", default="127.0.0.1.sslip.io", help="domain of service URLs")
    up.add_argument(
        "--drain-quiet-period", type=float, default=2.0, help="queue-proxy drain quiet period in seconds (Knative: 30)"
    )
    up.add_argument(
        "--autoscaler-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config-autoscaler override, e.g. scale-to-zero-grace-period=10s (repeatable)",
    )
    up.add_argument("-d", "--detach", action="store_true", help="run in the background; stop with `down`")

    apply = sub.add_parser("apply", help="create or update Services in the running instance")
    apply.add_argument("-f", "--filename", action="append", default=[], help="Service manifest (repeatable)")
    apply.add_argument("--example", action="append", default=[], metavar="NAME", help=EXAMPLE_HELP)

    delete = sub.add_parser("delete", help="delete a Service")
    delete.add_argument("name")
    delete.add_argument("-n", "--namespace", default="default")

    status = sub.add_parser("status", help="services, revisions, pods, panic mode, queue depth")
    status.add_argument("--json", action="store_true")
    status.add_argument("-w", "--watch", action="store_true", help="refresh every second until Ctrl-C")

    report = sub.add_parser("report", help="write a PNG plot of requests, concurrency and pods over time")
    report.add_argument("-o", "--output", type=Path, default=Path("sluice-report.png"))
    report.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="TIME=LABEL",
        help="label the phase that starts at TIME (Unix time, or seconds since the first sample); repeatable. "
        "Without it phases are derived: idle / scale from zero / traffic / cool down",
    )

    sub.add_parser("down", help="stop everything `up` started")
    add_command_parsers(sub)
    return top


def _err(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    state = StateDir(args.home.resolve() if args.home else default_home())
    command = args.command
    handlers = {"up": _up, "apply": _apply, "delete": _delete, "status": _status, "report": _report, "down": _down}
    handlers |= COMMAND_HANDLERS
    sys.exit(handlers[command](args, state))


# ---- up / apply / delete ---------------------------------------------------------------------


def _files(args: argparse.Namespace) -> list[str] | None:
    """`-f` files plus the manifests of `--example` names (None: answered or refused here)."""
    from .data import PackageDataError, example_path, example_summaries

    if "list" in args.example:
        for name, summary in example_summaries():
            print(f"{name:16} {summary}")
        return None
    try:
        return [*args.filename, *(str(example_path(name)) for name in args.example)]
    except PackageDataError as exc:
        _err(str(exc))
        return None


def _load(files: list[str]) -> Any:
    from .data import PackageDataError
    from .kubeapi.crd import CRDError

    try:
        return load_manifests(files)
    except (CRDError, PackageDataError) as exc:
        # Strict validation reads the shipped CRD schemas: a broken installation is one message.
        _err(f"cannot start: {exc}")
        return None
    except ManifestError as exc:
        print(f"{PROG}: rejected before starting anything:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def _parse_overrides(items: list[str]) -> dict[str, str] | None:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _err(f"--autoscaler-config {item!r}: expected KEY=VALUE")
            return None
        out[key.strip()] = value.strip()
    return out


def _up(args: argparse.Namespace, state: StateDir) -> int:
    files = _files(args)
    if files is None:
        return 0 if "list" in args.example else 2
    args.filename = files
    # The shipped CRDs and ConfigMaps, loaded before anything else (strict manifest validation
    # reads the CRD schemas too): a broken installation is one message naming the file, not a
    # traceback or a start-up that times out.
    from .data import PackageDataError, verify

    try:
        verify()
    except PackageDataError as exc:
        return _err(f"cannot start: {exc}")
    manifests = _load(files)
    if manifests is None:
        return 2
    overrides = _parse_overrides(args.autoscaler_config)
    if overrides is None:
        return 2
    running = state.live_supervisor()
    if running is not None:
        return _up_while_running(args, state, running, manifests)
    from .data import PackageDataError
    from .kubeapi.crd import CRDError
    from .kubeapi.tls import TLSError

    if args.detach:
        return _detach(args, state)
    from .supervisor import LocalOptions, StartupError, StartupInterrupted, Supervisor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    opts = LocalOptions(
        state=state,
        port=args.port,
        host=args.host,
        net=args.net,
        domain=args.domain,
        drain_quiet_period=args.drain_quiet_period,
        autoscaler_config=overrides,
    )
    try:
        sup = Supervisor(opts)
        asyncio.run(sup.run(manifests, on_ready=lambda s: _banner(s.opts, [m.name for m in manifests])))
    except StartupInterrupted as exc:
        print(f"sluice local: {exc}; everything it started is stopped", file=sys.stderr)
        return 130
    except (StartupError, CRDError, PackageDataError, TLSError) as exc:
        return _err(str(exc))
    except KeyboardInterrupt:
        pass
    print("sluice local: stopped", file=sys.stderr)
    return 0


def _up_while_running(args: argparse.Namespace, state: StateDir, running: dict[str, Any], manifests: Any) -> int:
    """A second `up`: applies its manifests to the running instance (what a user who runs `up -f`
    again wants) and says so, naming every start-up option that cannot change without a restart."""
    pid = running["supervisor"]["pid"]
    ingress = str(running.get("ingress", ""))
    print(f"sluice local is already running on {ingress} (pid {pid})")
    code = _apply_to(state, manifests) if manifests else 0
    if manifests and code == 0:
        print(f"applied {', '.join(args.filename)} to it")
    ignored = _ignored_options(args, running)
    if ignored:
        print(
            f"{', '.join(ignored)} ignored: the running instance keeps its settings; "
            "stop it first with `sluice local down` to start with new ones"
        )
    return code


def _ignored_options(args: argparse.Namespace, running: dict[str, Any]) -> list[str]:
    defaults = _parser().parse_args(["local", "up"])
    current = {
        "port": str(running.get("ingress", "")).rsplit(":", 1)[-1],
        "host": str(running.get("ingress", "")).removeprefix("http://").rsplit(":", 1)[0],
        "net": running.get("net"),
        "domain": running.get("domain"),
    }
    out = []
    for name in ("port", "host", "net", "domain", "drain_quiet_period", "autoscaler_config", "detach"):
        value = getattr(args, name)
        if value == getattr(defaults, name):
            continue
        if name in current and str(value) == str(current[name]):
            continue  # asked for what runs anyway
        flag = "--" + name.replace("_", "-")
        out.append(f"{flag} {value}" if name not in ("autoscaler_config", "detach") else flag)
    return out


def _banner(opts: Any, names: list[str]) -> None:
    from .commands.kubeconfig import CONTEXT, refresh_if_merged, user_kubeconfig
    from .snapshot import ingress_base

    url = ingress_base(opts.host, opts.port)
    kubeconfig = opts.state.kubeconfig
    print(f"sluice local is up: ingress {url} (state in {opts.state.root}); Ctrl-C stops everything", flush=True)
    print(f"  kubectl: export KUBECONFIG={kubeconfig}    (context {CONTEXT!r})", flush=True)
    # Only the default instance refreshes a merged context (a demo's or a test's own --home must not
    # repoint the user's kubectl at a throw-away instance).
    if opts.state.root == default_home() and refresh_if_merged(kubeconfig):
        print(f"           or kubectl --context {CONTEXT} ... ({user_kubeconfig()} refreshed)", flush=True)
    else:
        print("           or `sluice local kubeconfig --merge`, then kubectl --context sluice-local ...", flush=True)
    for name in names:
        print(f"  curl -H 'Host: {name}.default.{opts.domain}' {url}/    or    curl {url}/{name}/", flush=True)


def _detach(args: argparse.Namespace, state: StateDir) -> int:
    argv = [sys.executable, "-m", "sluice.local.cli", "local", "--home", str(state.root), "up"]
    for f in args.filename:
        argv += ["-f", str(Path(f).resolve())]
    argv += [
        "--port",
        str(args.port),
        "--host",
        args.host,
        "--net",
        args.net,
        "--domain",
        args.domain,
        "--drain-quiet-period",
        str(args.drain_quiet_period),
    ]
    for item in args.autoscaler_config:
        argv += ["--autoscaler-config", item]
    state.root.mkdir(parents=True, exist_ok=True)
    log_path = state.root / "supervisor.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        st = state.read_state()
        if st is not None and st.get("ready") and st.get("supervisor", {}).get("pid") == proc.pid:
            manifests = _load(args.filename) or []
            _wait_listed(state, {(m.namespace, m.name) for m in manifests})
            print(
                f"sluice local is up in the background (pid {proc.pid}): ingress {st['ingress']}; "
                f"`sluice local down` stops it"
            )
            return 0
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-10:]
            return _err("failed to start:\n  " + "\n  ".join(tail))
        time.sleep(0.1)
    return _err(f"not ready after 90 s; see {log_path}")


def _client_call(state: StateDir, coro_factory: Any) -> Any:
    async def run() -> Any:
        from .kube import Kube
        from .kubeapi import kube_client_from_kubeconfig

        api = await kube_client_from_kubeconfig(state.kubeconfig)
        try:
            return await coro_factory(Kube(api))
        finally:
            await api.close()

    return asyncio.run(run())


def _apply_to(state: StateDir, manifests: Any) -> int:
    from .apply import apply_manifests

    for line in _client_call(state, lambda kube: apply_manifests(kube, manifests)):
        print(line)
    _wait_listed(state, {(m.namespace, m.name) for m in manifests})
    return 0


def _wait_listed(state: StateDir, keys: set[tuple[str, str]], timeout: float = 3.0) -> None:
    """Returns once `status.json` lists these Services (the next snapshot, within a second), so a
    `status` or `service list` right after `apply` or `up -d` shows what was just applied."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = state.read_json(state.status_file) or {}
        if keys <= {(s.get("namespace"), s.get("name")) for s in snap.get("services") or ()}:
            return
        time.sleep(0.1)


def _apply(args: argparse.Namespace, state: StateDir) -> int:
    files = _files(args)
    if files is None:
        return 0 if "list" in args.example else 2
    if not files:
        return _err("apply needs -f FILE or --example NAME", 2)
    manifests = _load(files)
    if manifests is None:
        return 2
    if state.live_supervisor() is None:
        return _err("sluice local is not running (start it with `sluice local up -f FILE`)")
    return _apply_to(state, manifests)


def _delete(args: argparse.Namespace, state: StateDir) -> int:
    from .kube import ALL

    if state.live_supervisor() is None:
        return _err("sluice local is not running")
    found = _client_call(state, lambda kube: kube.delete(ALL.SERVICES, args.namespace, args.name))
    if not found:
        return _err(f"service {args.namespace}/{args.name} not found")
    print(f"service.serving.knative.dev/{args.name} deleted")
    return 0


# ---- status / report / down --------------------------------------------------------------------


def _status(args: argparse.Namespace, state: StateDir) -> int:
    if state.live_supervisor() is None:
        if args.json:
            print(json.dumps({"running": False, "services": []}))
            return 0
        print("sluice local is not running")
        return 0
    if not args.watch:
        snap = _fresh_snapshot(state)
        print(json.dumps(snap | {"running": True}, indent=1) if args.json else render_status(snap))
        return 0
    try:
        while state.live_supervisor() is not None:
            snap = _fresh_snapshot(state)
            text = json.dumps(snap) if args.json else render_status(snap)
            sys.stdout.write(("\x1b[H\x1b[2J" if sys.stdout.isatty() and not args.json else "") + text + "\n")
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    return 0


def _fresh_snapshot(state: StateDir) -> dict[str, Any]:
    """The snapshot; when it lists no Service, the next one (written within a second) is awaited,
    so a Service applied a moment ago is not reported as "no services"."""
    asked = time.time()
    snap = state.read_json(state.status_file) or {"services": []}
    deadline = time.monotonic() + 2.5
    while not snap.get("services") and float(snap.get("time") or 0) <= asked and time.monotonic() < deadline:
        time.sleep(0.1)
        snap = state.read_json(state.status_file) or snap
    return dict(snap)


def _report(args: argparse.Namespace, state: StateDir) -> int:
    from .report import ReportError, write_report

    phases = None
    if args.phase:
        phases = []
        for item in args.phase:
            when, sep, label = item.partition("=")
            try:
                phases.append((float(when), label.strip()))
            except ValueError:
                sep = ""
            if not sep or not label.strip():
                return _err(f"--phase {item!r}: expected TIME=LABEL")
    try:
        n = write_report(state.samples_file, args.output, phases)
    except ReportError as exc:
        return _err(str(exc))
    print(f"wrote {args.output} ({n} samples)")
    return 0


def _down(args: argparse.Namespace, state: StateDir) -> int:
    st = state.read_state()
    if st is None:
        print("sluice local is not running")
        return 0
    running = state.live_supervisor()
    if running is not None:
        pid = int(running["supervisor"]["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state.live_supervisor() is not None:
            time.sleep(0.1)
        if state.live_supervisor() is not None:
            os.kill(pid, signal.SIGKILL)
    leftovers = state.kill_recorded(st)
    state.state_file.unlink(missing_ok=True)
    state.status_file.unlink(missing_ok=True)
    if leftovers:
        print("killed leftover processes: " + ", ".join(leftovers))
    print("sluice local: stopped")
    return 0


if __name__ == "__main__":
    main()
