"""Knative status conditions on JSON status dicts (`knative.dev/pkg/apis/condition_set.go`).

A *living* condition set has a happy condition (`Ready`) that summarises its dependents
(CONTRACT.md §4.2). This is a port of Go's `ConditionManager`: `mark_true` / `mark_unknown` /
`mark_false` update the happy condition the same incremental way, and `set_condition` keeps a
condition's `lastTransitionTime` when nothing but the time would change. Conditions are kept
sorted by type, as Go does for kubectl. Times are RFC 3339 with whole seconds (metav1.Time).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "READY",
    "ConditionManager",
    "format_time",
    "groom_transition_times",
    "parse_time",
]

READY = "Ready"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

Condition = dict[str, Any]


def format_time(t: float) -> str:
    """metav1.Time JSON: RFC 3339, second precision, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def parse_time(text: str | None) -> float | None:
    """Parses RFC 3339 (`Z` or offset, optional fraction) to Unix seconds; None if unparsable."""
    if not text:
        return None
    s = text.strip()
    try:
        offset = 0
        if s.endswith(("Z", "z")):
            s = s[:-1]
        elif len(s) > 6 and s[-6] in "+-" and s[-3] == ":":
            sign = 1 if s[-6] == "+" else -1
            offset = sign * (int(s[-5:-3]) * 3600 + int(s[-2:]) * 60)
            s = s[:-6]
        frac = 0.0
        if "." in s:
            s, f = s.split(".", 1)
            frac = float("0." + f) if f else 0.0
        base = calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))
        return base + frac - offset
    except (ValueError, OverflowError):
        return None


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal ignoring lastTransitionTime (empty strings and absent fields are the same)."""
    for field in ("type", "status", "reason", "message", "severity"):
        if (a.get(field) or "") != (b.get(field) or ""):
            return False
    return True


class ConditionManager:
    """Manages `status["conditions"]` of one object for a living condition set."""

    def __init__(
        self,
        status: dict[str, Any],
        dependents: Sequence[str],
        clock: Callable[[], float],
        happy: str = READY,
    ) -> None:
        self.status = status
        self.dependents = tuple(dependents)
        self.happy = happy
        self.clock = clock

    @property
    def conditions(self) -> list[Condition]:
        conds = self.status.get("conditions")
        if not isinstance(conds, list):
            conds = []
            self.status["conditions"] = conds
        return conds

    def get(self, ctype: str) -> Condition | None:
        for c in self.conditions:
            if isinstance(c, dict) and c.get("type") == ctype:
                return c
        return None

    def status_of(self, ctype: str) -> str | None:
        c = self.get(ctype)
        return None if c is None else str(c.get("status", ""))

    def is_true(self, ctype: str) -> bool:
        return self.status_of(ctype) == TRUE

    def is_false(self, ctype: str) -> bool:
        return self.status_of(ctype) == FALSE

    def is_unknown(self, ctype: str) -> bool:
        return self.status_of(ctype) == UNKNOWN

    def set_condition(self, ctype: str, status: str, reason: str = "", message: str = "") -> None:
        new: Condition = {"type": ctype, "status": status}
        if reason:
            new["reason"] = reason
        if message:
            new["message"] = message
        kept: list[Condition] = []
        for c in self.conditions:
            if isinstance(c, dict) and c.get("type") == ctype:
                if _same(c, new):
                    return  # only the time would change
                continue
            kept.append(c)
        new["lastTransitionTime"] = format_time(self.clock())
        kept.append(new)
        kept.sort(key=lambda c: str(c.get("type", "")))
        self.status["conditions"] = kept

    def initialize(self) -> None:
        """Missing conditions start Unknown (True if the happy condition is already True)."""
        happy = self.get(self.happy)
        if happy is None:
            self.set_condition(self.happy, UNKNOWN)
            happy = self.get(self.happy)
        initial = TRUE if happy is not None and happy.get("status") == TRUE else UNKNOWN
        for dep in self.dependents:
            if self.get(dep) is None:
                self.set_condition(dep, initial)

    def mark_true(self, ctype: str) -> None:
        self.set_condition(ctype, TRUE)
        unhappy = self._find_unhappy_dependent()
        if unhappy is not None:
            self.set_condition(
                self.happy, str(unhappy.get("status")), unhappy.get("reason", ""), unhappy.get("message", "")
            )
        elif ctype != self.happy:
            self.set_condition(self.happy, TRUE)

    def mark_unknown(self, ctype: str, reason: str, message: str) -> None:
        self.set_condition(ctype, UNKNOWN, reason, message)
        is_dependent = False
        for dep in self.dependents:
            if self.is_false(dep):
                # A failed dependent trumps an unknown one; the happy condition must stay False.
                if not self.is_false(self.happy):
                    self.mark_false(self.happy, reason, message)
                return
            if dep == ctype:
                is_dependent = True
        if is_dependent:
            self.set_condition(self.happy, UNKNOWN, reason, message)

    def mark_false(self, ctype: str, reason: str, message: str) -> None:
        self.set_condition(ctype, FALSE, reason, message)
        if ctype == self.happy or ctype in self.dependents:
            self.set_condition(self.happy, FALSE, reason, message)

    def _find_unhappy_dependent(self) -> Condition | None:
        # Go sorts the dependents by lastTransitionTime (newest first), False before Unknown.
        deps = [c for c in self.conditions if c.get("type") in self.dependents]
        deps.sort(key=lambda c: parse_time(c.get("lastTransitionTime")) or 0.0, reverse=True)
        for wanted in (FALSE, UNKNOWN):
            for c in deps:
                if c.get("status") == wanted:
                    return c
        return None


def groom_transition_times(old_status: Mapping[str, Any], new_status: dict[str, Any]) -> None:
    """Keeps the old lastTransitionTime of every condition that ended up as it was
    (Go `PostProcessReconcile`), even if it flipped back and forth during the reconcile."""
    old = {c.get("type"): c for c in old_status.get("conditions") or [] if isinstance(c, dict)}
    for c in new_status.get("conditions") or []:
        prev = old.get(c.get("type"))
        if prev is not None and _same(prev, c) and prev.get("lastTransitionTime"):
            c["lastTransitionTime"] = prev["lastTransitionTime"]
