"""Sluice activator (CONTRACT.md §3)."""

import sluice as _sluice  # noqa: F401  (first: its native guard runs before activator.handler is found)
