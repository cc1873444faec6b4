"""Sluice: a fast Python data plane for Knative Serving (shared core)."""

from . import native as _native  # noqa: F401  (first: decides compiled or interpreted hot path)

__version__ = "0.1.0"
