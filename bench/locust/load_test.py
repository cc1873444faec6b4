"""load-test (Knative test/performance/benchmarks/load-test), scaled: from zero pods, steps of
constant rate (Knative: 1k, 2k, 3k req/s, 2 min each) through the ingress; the runner sets the
steps in SLUICE_BENCH_STAGES, e.g. `[[40, 100], [40, 200], [40, 300]]`.
"""

from __future__ import annotations

from recorder import PacedUser, StagedShape


class LoadUser(PacedUser):
    pass


class LoadShape(StagedShape):
    pass
