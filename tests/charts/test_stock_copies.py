"""The stock Knative manifests the chart tests use (tests/charts/knative) are verbatim copies of
the reference in ../shared/knative/config; skipped in a clone without ../shared."""

from __future__ import annotations

import pytest

from tests.charts.support import ROOT, STOCK_CONFIG

REFERENCE = ROOT.parent / "shared" / "knative" / "config"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} is absent: nothing to compare with")
def test_copies_match_the_reference() -> None:
    copies = sorted(p for p in STOCK_CONFIG.rglob("*.yaml"))
    assert copies
    for copy in copies:
        relative = copy.relative_to(STOCK_CONFIG)
        assert copy.read_bytes() == (REFERENCE / relative).read_bytes(), f"{relative} drifted from ../shared"
