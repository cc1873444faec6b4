"""A minimal Prometheus text-exposition registry for the QP's user metrics on :9091 (§2.10).

No client library: the sidecar imports only the stdlib (§2.2), and observations sit on the hot
path, so they are kept to plain attribute updates — a histogram observation is one `bisect` and
two additions (per-bucket counts are made cumulative only when scraped).

Names and labels follow what OTel's Prometheus exporter produces from Knative's instruments:
dots become underscores, the unit suffix is appended (`_seconds`), `{request}`-style units are
dropped, so `kn.serving.invocation.duration` with attribute `http.response.status_code` is
exposed as `kn_serving_invocation_duration_seconds{http_response_status_code="200"}`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from proxy.requestlog import go_float

__all__ = [
    "CONTENT_TYPE",
    "INVOCATION_DURATION_BOUNDS",
    "QUEUE_WAIT_BOUNDS",
    "Counter",
    "Gauge",
    "Histogram",
    "QueueProxyMetrics",
    "Registry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# §2.10: explicit bucket boundaries of kn.serving.invocation.duration.
INVOCATION_DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# sluice_queue_wait_seconds: time spent queued in the breaker (§2.7) — mostly sub-millisecond,
# up to the revision timeout when the queue backs up, hence the wider, finer range.
QUEUE_WAIT_BOUNDS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


def _fmt(v: float) -> str:
    # client_golang writes sample values and `le` with strconv 'g' (shortest) and +Inf/-Inf/NaN.
    if isinstance(v, int):
        return str(v)
    return go_float(v)


def escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _label_str(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only increase")
        self.value += amount


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is the +Inf bucket
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # `le` is inclusive: bisect_left puts a value equal to a bound into that bound's bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


C = TypeVar("C", _CounterChild, _GaugeChild, _HistogramChild)


class _Metric(Generic[C]):
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        _check_name(name)
        for label in labelnames:
            _check_name(label)
            if label.startswith("__") or label == "le":
                raise ValueError(f"reserved label name {label!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        # An unlabelled metric has exactly one child, created up front so it is always exposed.
        self._default: C | None = self.labels() if not self.labelnames else None

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child for these label values (cache it on the hot path; this is a dict lookup)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new_child()
        return child

    def _unlabelled(self) -> C:
        if self._default is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...)")
        return self._default

    def _header(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.documentation)}"
        yield f"# TYPE {self.name} {self.kind}"

    def expose(self) -> Iterator[str]:
        raise NotImplementedError


def _check_name(name: str) -> None:
    ok = name and (name[0].isalpha() or name[0] in "_:") and all(c.isalnum() or c in "_:" for c in name)
    if not ok or not name.isascii():
        raise ValueError(f"invalid Prometheus name {name!r}")


class Counter(_Metric[_CounterChild]):
    """A counter; pass the full exposed name (OTel's exporter adds `_total` to counters)."""

    kind = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def expose(self) -> Iterator[str]:
        yield from self._header()
        for values, child in self._children.items():
            yield f"{self.name}{_label_str(self.labelnames, values)} {_fmt(child.value)}"


class Gauge(_Metric[_GaugeChild]):
    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)

    def expose(self) -> Iterator[str]:
        yield from self._header()
        for values, child in self._children.items():
            yield f"{self.name}{_label_str(self.labelnames, values)} {_fmt(child.value)}"


class Histogram(_Metric[_HistogramChild]):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, bounds: Sequence[float], labelnames: Sequence[str] = ()) -> None:
        b = tuple(float(x) for x in bounds)
        if not b or any(math.isnan(x) or math.isinf(x) for x in b) or list(b) != sorted(set(b)):
            raise ValueError(f"{name}: bucket bounds must be finite, strictly increasing, non-empty: {bounds}")
        self.bounds = b
        super().__init__(name, documentation, labelnames)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def expose(self) -> Iterator[str]:
        yield from self._header()
        les = [f'le="{_fmt(b)}"' for b in self.bounds] + ['le="+Inf"']
        for values, child in self._children.items():
            cumulative = 0
            for le, n in zip(les, child.counts, strict=True):
                cumulative += n
                yield f"{self.name}_bucket{_label_str(self.labelnames, values, le)} {cumulative}"
            labels = _label_str(self.labelnames, values)
            yield f"{self.name}_sum{labels} {_fmt(child.sum)}"
            yield f"{self.name}_count{labels} {cumulative}"


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric[Any]] = {}

    def register(self, metric: _Metric[C]) -> _Metric[C]:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        m = Counter(name, documentation, labelnames)
        self.register(m)
        return m

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        m = Gauge(name, documentation, labelnames)
        self.register(m)
        return m

    def histogram(
        self, name: str, documentation: str, bounds: Sequence[float], labelnames: Sequence[str] = ()
    ) -> Histogram:
        m = Histogram(name, documentation, bounds, labelnames)
        self.register(m)
        return m

    def render(self) -> bytes:
        """The text exposition (format 0.0.4), served with `CONTENT_TYPE`."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.expose())
        return ("\n".join(lines) + "\n").encode() if lines else b""


class QueueProxyMetrics:
    """The QP's user metrics (§2.10) plus Sluice's own breaker queue-wait histogram."""

    def __init__(self, registry: Registry | None = None, *, queue_depth: bool = True) -> None:
        self.registry = registry if registry is not None else Registry()
        self.invocation_duration = self.registry.histogram(
            "kn_serving_invocation_duration_seconds",
            "The duration of the request handled by the user container",
            INVOCATION_DURATION_BOUNDS,
            ("http_response_status_code",),
        )
        # Only registered when cc >= 1 (there is no breaker otherwise, §2.7).
        self.queue_depth: Gauge | None = (
            self.registry.gauge(
                "kn_serving_queue_depth", "Number of requests admitted by the breaker (queued + running)"
            )
            if queue_depth
            else None
        )
        self.queue_wait = self.registry.histogram(
            "sluice_queue_wait_seconds",
            "Time requests spent waiting in the breaker queue for an execution slot",
            QUEUE_WAIT_BOUNDS,
        )
        self._by_status: dict[int, _HistogramChild] = {}

    def observe_invocation(self, status_code: int, seconds: float) -> None:
        child = self._by_status.get(status_code)
        if child is None:
            child = self._by_status[status_code] = self.invocation_duration.labels(str(status_code))
        child.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        if self.queue_depth is not None:
            self.queue_depth.set(depth)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)
