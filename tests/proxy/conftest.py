from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.__main__ import QueueProxyProcess
from proxy.config import QueueProxyConfig
from proxy.observability import ObservabilityConfig
from proxy.readiness import ReadinessProber, parse_readiness_probes
from tests.support import qp_env

MakeQP = Callable[..., Awaitable[QueueProxyProcess]]


@pytest.fixture
async def make_qp() -> AsyncIterator[MakeQP]:
    """In-process queue-proxies on ephemeral ports (same objects `python -m proxy` wires)."""
    procs: list[QueueProxyProcess] = []

    async def make(user_port: int, **env: str) -> QueueProxyProcess:
        cfg = QueueProxyConfig.from_env(qp_env(user_port, **env))
        probes = parse_readiness_probes(cfg.serving_readiness_probe, cfg.enable_multi_container_probes)
        obs = ObservabilityConfig.from_json(cfg.observability_config)
        proc = QueueProxyProcess(cfg, ReadinessProber(probes) if probes else None, obs, qp_env(user_port, **env))
        await proc.start()
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        await proc.close()
