"""rollout-probe (Knative test/performance/benchmarks/rollout-probe), scaled: a steady rate
through the ingress while the runner applies a changed manifest (a new Revision rolls out and
the old one drains). SLUICE_BENCH_STAGES holds `[[seconds, rate]]`.
"""

from __future__ import annotations

from recorder import PacedUser, StagedShape


class RolloutUser(PacedUser):
    pass


class RolloutShape(StagedShape):
    pass
