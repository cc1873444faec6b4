"""Counting dropped stat payloads (issue 4, "Bad input and faults").

A corrupt, oversized or nonsensical stat payload is never fatal: it is dropped, counted by reason
(the Prometheus exporter reads `counts` later) and logged once per source, so a misbehaving pod or
activator cannot flood the log.
"""

from __future__ import annotations

import logging

__all__ = ["DroppedPayloads"]

# Bounds the "already logged" memory; when full it starts over (a source may then log again).
_MAX_REMEMBERED_SOURCES = 10_000


class DroppedPayloads:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.counts: dict[str, int] = {}
        self._logger = logger if logger is not None else logging.getLogger("autoscaler.dropped")
        self._logged: set[str] = set()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def drop(self, source: str, reason: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if source in self._logged:
            return
        if len(self._logged) >= _MAX_REMEMBERED_SOURCES:
            self._logged.clear()
        self._logged.add(source)
        self._logger.warning(
            "dropping stat payload from %s: %s%s (further drops from this source are only counted)",
            source,
            reason,
            f": {detail}" if detail else "",
        )
