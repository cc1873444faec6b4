"""Command-line surface shared by the component entry points (`sluice-queue-proxy`,
`sluice-activator`, `sluice-autoscaler`) and the `sluice` CLI: `--version`, and a `--help`
that lists the environment variables a component reads.

The components are configured by their environment, as Knative's Go binaries are (CONTRACT.md
§2.1, §3.1, §4.1); they take no flags besides these two. The variable list is recorded from the
component's own `from_env` reader, so the help cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["DISTRIBUTION", "component_args", "env_keys", "version_text"]

DISTRIBUTION = "knative-sluice"


def version_text(prog: str) -> str:
    """`<prog> <version> (knative-sluice, Python X.Y.Z)`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown (not installed)"
    py = ".".join(str(n) for n in sys.version_info[:3])
    return f"{prog} {ours} ({DISTRIBUTION}, Python {py})"


class _Recorder(dict[str, str]):
    """An empty environment that remembers which keys were asked for, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.asked:
            self.asked.append(key)
        return default

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key not in self.asked:
            self.asked.append(key)
        return False


def env_keys(*readers: Callable[[Mapping[str, str]], object]) -> list[str]:
    """The environment variables `readers` look up, run against an empty environment (a reader
    that rejects the empty environment has still asked for every key first)."""
    rec = _Recorder()
    for read in readers:
        try:
            read(rec)
        except Exception:  # a ConfigError listing the required keys: expected here
            pass
    return list(rec.asked)


def component_args(
    prog: str, doc: str | None, env: Sequence[str], extra: str = "", argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parses a component's command line (only `--help` and `--version`): the help is the
    module's docstring, the variables in `env` and `extra`."""
    listed = textwrap.fill(", ".join(env), width=96, initial_indent="  ", subsequent_indent="  ")
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(doc or "").strip(),
        epilog=f"environment variables read:\n{listed}" + (f"\n\n{extra}" if extra else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text(prog))
    return parser.parse_args(argv)
