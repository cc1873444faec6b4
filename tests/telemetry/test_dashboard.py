"""The Grafana dashboard shipped with the chart names only metrics Sluice really exports.

The exported names come from the components' own telemetry objects rendering a Prometheus
exposition (the same exporter a scrape reads), after one observation of every instrument,
for a concurrency-scaled and an RPS-scaled revision; no list is written down twice."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from activator.backends import PoolRegistry
from activator.revisions import Revisions
from activator.telemetry import ActivatorTelemetry
from autoscaler.collector import MetricCollector
from autoscaler.podaccessor import PodCounts
from autoscaler.scaling import MultiScaler
from autoscaler.telemetry import AutoscalerTelemetry
from proxy.config import QueueProxyConfig
from proxy.observability import ObservabilityConfig as QueueProxyObservability
from proxy.telemetry import QueueProxyTelemetry
from sluice.http.server import Exchange, HttpServer, ServerConnection
from sluice.telemetry.config import ExportSettings, ObservabilitySettings
from sluice.telemetry.hooks import done_request
from tests.activator.conftest import revision_body
from tests.autoscaler.test_scaling import BASE, Clock, FakeMetrics
from tests.support import qp_env
from tests.telemetry.prom import Scrape

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "sluice" / "dashboards"

# PromQL functions, aggregations and keywords: every other identifier outside label matchers,
# ranges and label lists is a metric name.
_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "topk", "bottomk", "abs", "clamp_min",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)) - _PROMQL_WORDS


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, kn_revision_name) (rate(a_bucket{x=~"5.."}[5m])'
        " * on (instance) group_left (c) target_info))"
    )
    assert metric_names(expr) == {"a_bucket", "target_info"}


def exported_names() -> set[str]:
    prometheus = ExportSettings("prometheus", "127.0.0.1:1")
    names: set[str] = set()

    # Queue-proxy (§2.10), with a breaker and the pre-1.19 names.
    env = qp_env(8080, CONTAINER_CONCURRENCY="1", SLUICE_LEGACY_PROMETHEUS_NAMES="true")
    cfg = QueueProxyConfig.from_env(env)
    obs = QueueProxyObservability.from_json('{"requestMetrics": {"protocol": "prometheus"}}')
    qp = QueueProxyTelemetry(cfg, obs, env, lambda: 1)
    assert qp.metrics is not None and qp.export is not None
    ex = Exchange(ServerConnection(HttpServer(lambda ex: None)))
    ex.method, ex.status = b"GET", 200
    qp.metrics.observe_invocation(200, 0.01)
    qp.metrics.observe_queue_wait(0.001)
    qp.metrics.observe_http(ex, 200, 0.01, 0, 0.009, 200)
    names |= Scrape(qp.export.render().decode()).names()

    # Activator (§3.10), one revision, one request of each kind.
    revisions = Revisions(PoolRegistry(), "127.0.0.1")
    key = revisions.revision_event("ADDED", {**revision_body("hello-00001"), "metadata": {
        **revision_body("hello-00001")["metadata"], "namespace": "default"}})  # fmt: skip
    settings = ObservabilitySettings(prometheus, legacy_prometheus_names=True)
    act = ActivatorTelemetry(settings, revisions, lambda: {key: 1.0}, lambda: True, lambda: 1, "ks", "act-0", {})
    entry = revisions.get(key)
    assert act.metrics is not None and act.export is not None and entry is not None
    act.metrics.on_wait_done(entry, 0.5)
    act.metrics.on_cold_start(entry, 2.0)
    act.metrics.on_request_done(entry, ex, "10.0.0.1:8012", done_request(0.0, 0.5, 2.0, 2.1, 200, None, True, "", 0))
    names |= Scrape(act.export.render().decode()).names()

    # Autoscaler (§4.7): a concurrency- and an RPS-scaled decider, each evaluated once.
    clock = Clock()
    multi = MultiScaler(FakeMetrics(concurrency=(5.0, 5.0), rps=(5.0, 5.0)), lambda ns, name: 1, clock)
    multi.create("default", "c", BASE)
    multi.create("default", "r", replace(BASE, scaling_metric="rps"))
    multi.tick("default/c")
    multi.tick("default/r")
    # ... and the KPA reconciler's last report of their pods; one scrape timed.
    report = {"default/c": (1, PodCounts(1, 0, 0, 0)), "default/r": (1, PodCounts(1, 0, 0, 0))}
    collector = MetricCollector(clock)
    auto = AutoscalerTelemetry(
        ObservabilitySettings(prometheus), multi, collector, lambda key: {}, "ks", "as-0", {}, clock, lambda: report
    )
    assert auto.export is not None and collector.scrape_observer is not None
    collector.scrape_observer("default/c", 0.004)
    names |= Scrape(auto.export.render().decode()).names()
    for t in (qp, act, auto):
        t.shutdown()
    return names


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert dashboards, "the chart ships at least one dashboard"
    exported = exported_names()
    # Sanity: the export really covers all three components.
    assert {"kn_serving_invocation_duration_seconds_bucket", "sluice_activator_cold_start_seconds_bucket",
            "kn_revision_pods_desired", "kn_revision_rps_stable_per_second"} <= exported  # fmt: skip
    checked = 0
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                names = metric_names(target["expr"])
                assert names, f"{path.name}: {panel['title']}: no metric in {target['expr']!r}"
                missing = names - exported
                assert not missing, f"{path.name}: {panel['title']}: not exported: {sorted(missing)}"
                checked += 1
    assert checked >= 20
