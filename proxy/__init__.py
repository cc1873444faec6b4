"""Sluice queue-proxy (CONTRACT.md §2)."""

import sluice as _sluice  # noqa: F401  (first: its native guard runs before proxy.handler is found)
