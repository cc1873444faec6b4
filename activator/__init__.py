"""Sluice activator (CONTRACT.md §3)."""
