"""Sluice: a fast Python data plane for Knative Serving (shared core)."""

__version__ = "0.1.0"
