"""Prometheus text exposition for the QP's :9091 user metrics (CONTRACT.md §2.10)."""

from __future__ import annotations

import math
import re

import pytest

from proxy.prometheus import (
    CONTENT_TYPE,
    INVOCATION_DURATION_BOUNDS,
    QUEUE_WAIT_BOUNDS,
    Counter,
    Histogram,
    QueueProxyMetrics,
    Registry,
)

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_exposition(text: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, dict[str, str], float]]]:
    """A strict parser of format 0.0.4: ({name: (type, help)}, [(sample name, labels, value)])."""
    meta: dict[str, list[str]] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    assert text.endswith("\n")
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            meta.setdefault(name, ["", ""])[1] = doc
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            meta.setdefault(name, ["", ""])[0] = kind
        else:
            m = _SAMPLE_RE.match(line)
            assert m, f"bad sample line {line!r}"
            labels: dict[str, str] = {}
            raw = m.group(2) or ""
            pos = 0
            while pos < len(raw):
                lm = _LABEL_RE.match(raw, pos)
                assert lm, f"bad labels {raw!r}"
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
            samples.append((m.group(1), labels, float(m.group(3))))
    return {k: (v[0], v[1]) for k, v in meta.items()}, samples


def values(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> list[float]:
    return [v for n, labels, v in samples if n == name and all(labels.get(k) == x for k, x in match.items())]


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    reg = Registry()
    h = reg.histogram("lat_seconds", "latency", (0.005, 0.01, 1.0, 10.0))
    for v in (0.001, 0.005, 0.006, 0.3, 10.0, 11.0, 100.0):
        h.observe(v)
    meta, samples = parse_exposition(reg.render().decode())
    assert meta == {"lat_seconds": ("histogram", "latency")}
    buckets = {s[1]["le"]: s[2] for s in samples if s[0] == "lat_seconds_bucket"}
    assert buckets == {"0.005": 2, "0.01": 3, "1": 4, "10": 5, "+Inf": 7}
    assert values(samples, "lat_seconds_count") == [7]
    assert values(samples, "lat_seconds_sum") == [pytest.approx(121.312)]
    # Bucket order is ascending with +Inf last, as scrapers expect.
    assert [s[1]["le"] for s in samples if s[0] == "lat_seconds_bucket"] == ["0.005", "0.01", "1", "10", "+Inf"]


def test_invocation_duration_matches_knative_name_bounds_and_label() -> None:
    m = QueueProxyMetrics()
    m.observe_invocation(200, 0.02)
    m.observe_invocation(200, 0.2)
    m.observe_invocation(503, 3.0)
    meta, samples = parse_exposition(m.registry.render().decode())
    assert meta["kn_serving_invocation_duration_seconds"][0] == "histogram"
    les = [s[1]["le"] for s in samples if s[0] == "kn_serving_invocation_duration_seconds_bucket"]
    expected = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"]
    assert les == [*expected, "+Inf"] * 2
    assert [float(x) for x in expected] == list(INVOCATION_DURATION_BOUNDS)
    name = "kn_serving_invocation_duration_seconds"
    assert values(samples, f"{name}_count", http_response_status_code="200") == [2]
    assert values(samples, f"{name}_count", http_response_status_code="503") == [1]
    assert values(samples, f"{name}_bucket", http_response_status_code="200", le="0.025") == [1]
    assert values(samples, f"{name}_bucket", http_response_status_code="503", le="2.5") == [0]
    assert values(samples, f"{name}_bucket", http_response_status_code="503", le="5") == [1]


def test_queue_depth_gauge_and_queue_wait_histogram() -> None:
    m = QueueProxyMetrics()
    m.set_queue_depth(7)
    m.observe_queue_wait(0.0002)
    meta, samples = parse_exposition(m.registry.render().decode())
    assert meta["kn_serving_queue_depth"][0] == "gauge"
    assert values(samples, "kn_serving_queue_depth") == [7]
    assert meta["sluice_queue_wait_seconds"][0] == "histogram"
    assert values(samples, "sluice_queue_wait_seconds_bucket", le="0.0001") == [0]
    assert values(samples, "sluice_queue_wait_seconds_bucket", le="0.0005") == [1]
    assert len(values(samples, "sluice_queue_wait_seconds_bucket")) == len(QUEUE_WAIT_BOUNDS) + 1


def test_queue_depth_absent_without_breaker() -> None:
    m = QueueProxyMetrics(queue_depth=False)
    m.set_queue_depth(3)  # a no-op, so the handler need not branch
    meta, _ = parse_exposition(m.registry.render().decode())
    assert "kn_serving_queue_depth" not in meta


def test_label_value_escaping_round_trips() -> None:
    reg = Registry()
    c = reg.counter("requests_total", "help with \\ and\nnewline", ("path",))
    tricky = 'a"b\\c\nd}{,=é'
    c.labels(tricky).inc(2)
    c.labels("plain").inc()
    text = reg.render().decode()
    assert "# HELP requests_total help with \\\\ and\\nnewline\n" in text
    assert 'path="a\\"b\\\\c\\nd}{,=é"' in text
    meta, samples = parse_exposition(text)
    assert meta["requests_total"] == ("counter", "help with \\\\ and\\nnewline")
    assert values(samples, "requests_total", path=tricky) == [2]
    assert values(samples, "requests_total", path="plain") == [1]


def test_unlabelled_metrics_are_exposed_from_the_start() -> None:
    reg = Registry()
    reg.counter("c_total", "c")
    reg.gauge("g", "g")
    reg.histogram("h", "h", (1.0,))
    _, samples = parse_exposition(reg.render().decode())
    assert values(samples, "c_total") == [0]
    assert values(samples, "g") == [0]
    assert values(samples, "h_count") == [0]
    assert values(samples, "h_bucket", le="+Inf") == [0]


def test_gauge_operations_and_float_formatting() -> None:
    reg = Registry()
    g = reg.gauge("g", "g")
    g.set(2.5)
    g.inc(2)
    g.dec(0.25)
    assert "\ng 4.25\n" in reg.render().decode()
    g.set(1234567.0)
    assert "\ng 1.234567e+06\n" in reg.render().decode()  # Go's strconv 'g', as client_golang writes
    g.set(math.inf)
    assert "\ng +Inf\n" in reg.render().decode()


def test_empty_registry_renders_nothing_and_content_type() -> None:
    assert Registry().render() == b""
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Counter("bad-name", "x"),
        lambda: Counter("0bad", "x"),
        lambda: Counter("ok", "x", ("le",)),
        lambda: Counter("ok", "x", ("__reserved",)),
        lambda: Counter("ok", "x", ("bad label",)),
        lambda: Histogram("h", "x", (1.0, 0.5)),
        lambda: Histogram("h", "x", (1.0, 1.0)),
        lambda: Histogram("h", "x", ()),
        lambda: Histogram("h", "x", (1.0, math.inf)),
    ],
)
def test_invalid_definitions_are_rejected(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_misuse_is_rejected() -> None:
    reg = Registry()
    c = reg.counter("c_total", "c", ("a",))
    with pytest.raises(ValueError):
        c.labels("x", "y")
    with pytest.raises(ValueError):
        c.inc()  # labelled: needs .labels()
    with pytest.raises(ValueError):
        c.labels("x").inc(-1)
    with pytest.raises(ValueError):
        reg.counter("c_total", "again")


def test_labels_returns_the_same_child() -> None:
    h = Histogram("h", "x", (1.0,), ("code",))
    assert h.labels("200") is h.labels("200")
    assert h.labels("200") is not h.labels("500")
