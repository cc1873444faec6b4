"""The in-place per-request histograms (sluice/telemetry/histograms.py): OTel bucket semantics,
cumulative and delta collection, the cardinality limit, and the SDK readers merging them."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import Histogram, HistogramDataPoint, Metric

from sluice.telemetry.config import ExportSettings
from sluice.telemetry.histograms import HotHistograms, delta_preferred
from sluice.telemetry.metrics import MetricsExport
from tests.telemetry.prom import Scrape


def _point(metric: Metric) -> HistogramDataPoint:
    assert isinstance(metric.data, Histogram)
    (point,) = metric.data.data_points
    return point


def _temporality(metric: Metric) -> str:
    assert isinstance(metric.data, Histogram)
    return metric.data.aggregation_temporality.name


def test_buckets_are_upper_inclusive_like_the_sdk() -> None:
    hists = HotHistograms()
    stream = hists.histogram("h", "s", "d", (1.0, 2.0)).stream({"a": 1})
    for value in (0.5, 1.0, 1.5, 2.0, 9.0):
        stream.record(value)
    (metric,) = hists.collect()
    point = _point(metric)
    assert list(point.bucket_counts) == [2, 2, 1]  # (-inf, 1], (1, 2], (2, +inf)
    assert (point.count, point.sum, point.min, point.max) == (5, 14.0, 0.5, 9.0)
    assert point.attributes == {"a": 1}
    assert _temporality(metric) == "CUMULATIVE"


def test_delta_reports_each_interval_once() -> None:
    hists = HotHistograms(delta=True)
    stream = hists.histogram("h", "s", "d", (1.0,)).stream({})
    stream.record(0.5)
    stream.record(3.0)
    (first,) = hists.collect()
    point = _point(first)
    assert (list(point.bucket_counts), point.count, point.sum) == ([1, 1], 2, 3.5)
    assert hists.collect() == []  # nothing new: an empty interval exports nothing
    stream.record(2.0)
    (second,) = hists.collect()
    point = _point(second)
    assert (list(point.bucket_counts), point.count, point.min, point.max) == ([0, 1], 1, 2.0, 2.0)
    assert _temporality(second) == "DELTA"


def test_temporality_preference_as_the_otlp_exporters_read_it() -> None:
    assert not delta_preferred({})
    assert not delta_preferred({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "cumulative"})
    assert delta_preferred({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "Delta"})
    assert delta_preferred({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "lowmemory"})


def test_series_past_the_limit_fold_into_one_overflow_series() -> None:
    hist = HotHistograms().histogram("h", "s", "d", (1.0,))
    hist.limit = 4
    streams = [hist.stream({"host": f"h{i}"}) for i in range(10)]
    assert len(hist.streams) == 4
    assert streams[3] is streams[9]
    assert streams[9].attributes == {"otel.metric.overflow": True}
    assert hist.stream({"host": "h0"}) is streams[0]  # a known series keeps its own stream


def test_prometheus_scrape_shows_hot_and_sdk_instruments_side_by_side() -> None:
    export = MetricsExport(ExportSettings("prometheus"), {"service.name": "t"}, "test")
    export.meter.create_counter("sdk.requests").add(2)
    export.histograms.histogram("hot.duration", "s", "d", (0.1,)).stream({"code": 200}).record(0.05)
    prom = Scrape(export.render().decode())
    assert prom.values("sdk_requests_total") == [2]
    assert prom.values("hot_duration_seconds_count", code="200") == [1]
    assert prom.values("hot_duration_seconds_bucket", code="200", le="0.1") == [1]
    assert {labels["otel_scope_name"] for labels in prom.labels("hot_duration_seconds_count")} == {"test"}
    export.shutdown()
