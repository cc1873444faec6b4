"""Typed environment / ConfigMap readers that name every bad key at once.

Components build frozen config dataclasses with `from_env(environ)` or
`from_configmap(data)`. Both go through `Reader`, which records one problem per
bad key instead of failing on the first, so an operator sees the whole list in
one start-up error (DEVELOPERS.md: "one message listing every bad key").
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Mapping
from typing import TypeVar

_N = TypeVar("_N", int, float)

__all__ = ["ConfigError", "Reader", "cluster_domain", "parse_go_bool", "parse_go_duration"]


class ConfigError(ValueError):
    """Raised with every problem found; `str()` lists them all."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid {source}: " + "; ".join(problems))


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Parses Go `time.ParseDuration` syntax ("1h2m3.5s", "500ms", "-1s", "0") into seconds."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def parse_go_bool(text: str) -> bool:
    """Go `strconv.ParseBool`: 1 t T TRUE true True / 0 f F FALSE false False."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean {text!r}")


class Reader:
    """Reads typed values from a string mapping, collecting problems by key.

    Call `check()` after reading every key: it raises one `ConfigError` that names
    each missing or malformed key with its value.
    """

    def __init__(self, data: Mapping[builtins.str, builtins.str], source: builtins.str = "environment") -> None:
        self.data = data
        self.source = source
        self.problems: list[builtins.str] = []

    def _raw(self, key: builtins.str, required: builtins.bool) -> builtins.str | None:
        value = self.data.get(key)
        if value is None and required:
            self.problems.append(f"{key} is required but not set")
        return value

    def str(self, key: builtins.str, default: builtins.str = "", required: builtins.bool = False) -> builtins.str:
        value = self._raw(key, required)
        return default if value is None else value

    def int(
        self,
        key: builtins.str,
        default: builtins.int = 0,
        required: builtins.bool = False,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self._raw(key, required)
        if value is None or (value == "" and not required):
            return default
        try:
            parsed = int(value.strip(), 10)
        except ValueError:
            self.problems.append(f"{key}={value!r} is not an integer")
            return default
        return self._bounded(key, value, parsed, minimum, maximum, default)

    def float(
        self,
        key: builtins.str,
        default: builtins.float = 0.0,
        required: builtins.bool = False,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        value = self._raw(key, required)
        if value is None or (value == "" and not required):
            return default
        try:
            parsed = float(value.strip())
        except ValueError:
            self.problems.append(f"{key}={value!r} is not a number")
            return default
        if not math.isfinite(parsed):
            self.problems.append(f"{key}={value!r} is not a finite number")
            return default
        return self._bounded(key, value, parsed, minimum, maximum, default)

    def bool(self, key: builtins.str, default: builtins.bool = False, required: builtins.bool = False) -> builtins.bool:
        value = self._raw(key, required)
        if value is None or (value == "" and not required):
            return default
        try:
            return parse_go_bool(value.strip())
        except ValueError:
            self.problems.append(f"{key}={value!r} is not a boolean (true/false)")
            return default

    def duration(
        self,
        key: builtins.str,
        default: builtins.float,
        required: builtins.bool = False,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        """A Go duration string, returned in seconds."""
        value = self._raw(key, required)
        if value is None or (value == "" and not required):
            return default
        try:
            parsed = parse_go_duration(value)
        except ValueError:
            self.problems.append(f"{key}={value!r} is not a duration (e.g. 60s, 1m30s)")
            return default
        return self._bounded(key, value, parsed, minimum, maximum, default)

    def port(self, key: builtins.str, default: builtins.int = 0, required: builtins.bool = False) -> builtins.int:
        return self.int(key, default, required, minimum=0, maximum=65535)

    def fail(self, key: builtins.str, message: builtins.str) -> None:
        """Records a problem found by a caller-side check (cross-field rules)."""
        self.problems.append(f"{key}: {message}")

    def _bounded(
        self, key: builtins.str, raw: builtins.str, value: _N, minimum: _N | None, maximum: _N | None, default: _N
    ) -> _N:
        if minimum is not None and value < minimum:
            self.problems.append(f"{key}={raw!r} must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.problems.append(f"{key}={raw!r} must be at most {maximum}")
            return default
        return value

    def check(self) -> None:
        if self.problems:
            raise ConfigError(self.problems, self.source)


def cluster_domain(environ: Mapping[str, str], resolv_conf: str = "/etc/resolv.conf") -> str:
    """`CLUSTER_DOMAIN`, else the first resolv.conf search entry starting with `svc.`,
    else `cluster.local` (CONTRACT.md conventions, knative.dev/pkg `network/domain.go`)."""
    from pathlib import Path

    explicit = environ.get("CLUSTER_DOMAIN", "")
    if explicit:
        return explicit.rstrip(".")
    try:
        text = Path(resolv_conf).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "search":
            for entry in fields[1:]:
                if entry.startswith("svc."):
                    return entry[4:].rstrip(".")
    return "cluster.local"
