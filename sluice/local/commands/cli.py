"""argparse wiring and handlers of the `commands` subcommands (called from `sluice.local.cli`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..state import StateDir
from .kubeconfig import CONTEXT, KubeconfigError, merge, unmerge, user_kubeconfig
from .logs import QUEUE_PROXY, USER_CONTAINER, LogsError, LogsOptions, run_logs
from .views import describe_service, find_service, list_revisions, list_services

__all__ = ["HANDLERS", "add_parsers"]

PROG = "sluice local"


def add_parsers(sub: Any) -> None:
    kc = sub.add_parser(
        "kubeconfig",
        help=f"print the kubeconfig path (context {CONTEXT!r}), or merge it into ~/.kube/config",
        description=(
            "Without options: print the path of the running instance's kubeconfig (use it with "
            f"`export KUBECONFIG=PATH` or `kubectl --kubeconfig PATH`). --merge adds the context, cluster and "
            f"user {CONTEXT!r} to the first file of $KUBECONFIG, else ~/.kube/config (a backup is kept, other "
            "entries and the current context are not changed; every later `up` refreshes them); "
            "--unmerge removes them."
        ),
    )
    mode = kc.add_mutually_exclusive_group()
    mode.add_argument("--merge", action="store_true", help=f"add/refresh the {CONTEXT!r} entries in your kubeconfig")
    mode.add_argument("--unmerge", action="store_true", help=f"remove the {CONTEXT!r} entries from your kubeconfig")

    logs = sub.add_parser(
        "logs",
        help="print the logs of a Service's pods (its latest ready Revision), like `kubectl logs -l ... --prefix`",
    )
    logs.add_argument("service")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (and new pods) until Ctrl-C")
    logs.add_argument("--tail", type=int, default=-1, help="lines per pod to show first (default: all)")
    logs.add_argument(
        "-c",
        "--container",
        default=USER_CONTAINER,
        help=f"{USER_CONTAINER} (the app, default) or {QUEUE_PROXY}",
    )
    logs.add_argument("-r", "--revision", default="", help="another revision than the latest ready one")
    logs.add_argument("-n", "--namespace", default="default")

    svc = sub.add_parser("service", aliases=["ksvc"], help="list or describe Services (like `kn service`)")
    svc_sub = svc.add_subparsers(dest="service_command", required=True)
    ls = svc_sub.add_parser("list", aliases=["ls"], help="NAME URL LATEST AGE CONDITIONS READY REASON")
    _namespaces(ls)
    desc = svc_sub.add_parser("describe", help="URL, revisions with traffic and tags, conditions")
    desc.add_argument("name")
    desc.add_argument("-n", "--namespace", default="default")

    rev = sub.add_parser("revision", help="list Revisions (like `kn revision list`)")
    rev_sub = rev.add_subparsers(dest="revision_command", required=True)
    rls = rev_sub.add_parser("list", aliases=["ls"], help="NAME SERVICE TRAFFIC TAGS GENERATION AGE ... READY")
    rls.add_argument("-s", "--service", default=None, help="only this Service's revisions")
    _namespaces(rls)


def _namespaces(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")


def _err(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _snapshot(state: StateDir) -> dict[str, Any] | None:
    """The running instance's status snapshot; None (after an error message) when none runs."""
    if state.live_supervisor() is None:
        _err("sluice local is not running (start it with `sluice local up -f FILE`)")
        return None
    snap = state.read_json(state.status_file)
    return snap if isinstance(snap, dict) else {"services": []}


def _kubeconfig(args: argparse.Namespace, state: StateDir) -> int:
    running = state.live_supervisor()
    if not (args.merge or args.unmerge):
        print(state.kubeconfig)
        if running is None:
            print(f"({PROG} is not running: this file exists while `sluice local up` runs)", file=sys.stderr)
        return 0
    target = user_kubeconfig()
    try:
        if args.unmerge:
            print(unmerge(target))
            return 0
        if running is None or not state.kubeconfig.exists():
            return _err("sluice local is not running: start it first (`sluice local up`), then --merge")
        print(merge(state.kubeconfig, target))
    except KubeconfigError as exc:
        return _err(str(exc))
    return 0


def _logs(args: argparse.Namespace, state: StateDir) -> int:
    if _snapshot(state) is None:
        return 1
    opts = LogsOptions(
        service=args.service,
        namespace=args.namespace,
        container=args.container,
        follow=args.follow,
        tail=args.tail,
        revision=args.revision,
    )

    def read() -> dict[str, Any] | None:
        snap = state.read_json(state.status_file)
        return snap if isinstance(snap, dict) else None

    try:
        return run_logs(read, lambda: state.live_supervisor() is not None, opts)
    except LogsError as exc:
        return _err(str(exc))


def _service(args: argparse.Namespace, state: StateDir) -> int:
    snap = _snapshot(state)
    if snap is None:
        return 1
    if args.service_command in ("list", "ls"):
        print(list_services(snap, None if args.all_namespaces else args.namespace))
        return 0
    svc = find_service(snap, args.name, args.namespace)
    if svc is None:
        return _err(f"services.serving.knative.dev {args.name!r} not found in namespace {args.namespace!r}")
    print(describe_service(snap, svc))
    return 0


def _revision(args: argparse.Namespace, state: StateDir) -> int:
    snap = _snapshot(state)
    if snap is None:
        return 1
    print(list_revisions(snap, None if args.all_namespaces else args.namespace, args.service))
    return 0


HANDLERS = {
    "kubeconfig": _kubeconfig,
    "logs": _logs,
    "service": _service,
    "ksvc": _service,
    "revision": _revision,
}
