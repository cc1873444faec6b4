"""Label and field selectors, parsed from the query-string syntax the real server accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import APIError, bad_request

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        # "!=" and "notin" match objects lacking the key, as in apimachinery's labels package.
        return not has or labels[self.key] not in self.values


def _split_top(s: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> str:
    key = key.strip()
    if not key or not _KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}": in "{raw}"')
    return key


def parse_label_selector(raw: str) -> list[Requirement]:
    raw = raw.strip()
    if not raw:
        return []
    reqs: list[Requirement] = []
    for part in _split_top(raw):
        p = part.strip()
        if not p:
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in \"{raw}\"")
        m = re.match(r"^(.+?)\s+(in|notin)\s*\((.*)\)$", p)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), raw), m.group(2), values))
            continue
        for op in ("==", "!=", "="):
            if op in p:
                key, _, value = p.partition(op)
                reqs.append(Requirement(_check_key(key, raw), "!=" if op == "!=" else "=", (value.strip(),)))
                break
        else:
            if p.startswith("!"):
                reqs.append(Requirement(_check_key(p[1:], raw), "!"))
            else:
                reqs.append(Requirement(_check_key(p, raw), "exists"))
    return reqs


def labels_match(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    if not reqs:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: tuple[str, ...]
    op: str  # "=" or "!="
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        cur: Any = obj
        for p in self.path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        actual = "" if cur is None else str(cur).lower() if isinstance(cur, bool) else str(cur)
        return (actual == self.value) == (self.op == "=")


def parse_field_selector(raw: str, allowed: tuple[str, ...]) -> list[FieldRequirement]:
    raw = raw.strip()
    if not raw:
        return []
    out: list[FieldRequirement] = []
    for part in raw.split(","):
        p = part.strip()
        for op in ("==", "!=", "="):
            if op in p:
                key, _, value = p.partition(op)
                key = key.strip()
                break
        else:
            raise bad_request(f"invalid selector: '{raw}'; can't understand '{p}'")
        if key not in allowed:
            # The real server's wording for a field it cannot select on.
            raise bad_request(f"field label not supported: {key}")
        out.append(FieldRequirement(tuple(key.split(".")), "!=" if op == "!=" else "=", value.strip()))
    return out


def fields_match(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)


def selector_to_string(sel: Any) -> str:
    """metav1.LabelSelector -> its string form (what `/scale` reports in status.selector)."""
    if not isinstance(sel, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


__all__ = [
    "APIError",
    "FieldRequirement",
    "Requirement",
    "fields_match",
    "labels_match",
    "parse_field_selector",
    "parse_label_selector",
    "selector_to_string",
]
