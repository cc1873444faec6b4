"""dataplane-probe (Knative test/performance/benchmarks/dataplane-probe), scaled: a constant rate
against a 100 ms handler for a bounded time. The runner points it at one target at a time
(the app itself, a queue-proxy, the activator, or through the ingress) via SLUICE_BENCH_PATH,
the locust --host and SLUICE_BENCH_HEADERS; SLUICE_BENCH_STAGES holds `[[seconds, rate]]`.
"""

from __future__ import annotations

from recorder import PacedUser, StagedShape


class DataplaneUser(PacedUser):
    pass


class DataplaneShape(StagedShape):
    pass
