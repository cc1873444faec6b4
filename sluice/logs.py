"""One JSON object per line with Knative's zap field names (ARCHITECTURE.md):
`severity`, `timestamp`, `logger`, `caller`, `message`, plus `knative.dev/key`
and `knative.dev/pod` where known, so log pipelines built for the Go images keep
working unchanged."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "level_from_knative"]

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def level_from_knative(level: str, zap_config: str = "") -> int:
    """`loglevel.<component>` wins; else the zap config's `level`; else info."""
    name = level.strip().lower()
    if not name and zap_config.strip():
        try:
            parsed = json.loads(zap_config)
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            name = str(parsed.get("level", "")).lower()
    return _LEVELS.get(name, logging.INFO)


class JsonFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
            "caller": f"{record.module}:{record.lineno}",
            "message": record.getMessage(),
        }
        entry.update(self.fields)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["stacktrace"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure_logging(
    logger_name: str,
    level: int = logging.INFO,
    fields: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> logging.Logger:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(logger_name)
