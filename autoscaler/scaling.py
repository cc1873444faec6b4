"""The KPA decider (CONTRACT.md §4.7) and the multiscaler that runs one per revision (§4.6).

Pure code: time comes from an injected `clock` (float Unix seconds) or an explicit `now`, metrics
from a `MetricClient` (the collector), ready pods from a callable. Knative files:
`pkg/autoscaler/scaling/autoscaler.go`, `multiscaler.go`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from sluice.periodic import run_every
from sluice.wire import Stat

from .aggregation import MaxTimeWindow
from .annotations import CONCURRENCY, RPS
from .decision import Decision
from .resources import DeciderSpec

__all__ = [
    "INVALID_RESULT",
    "TICK_INTERVAL",
    "Autoscaler",
    "Decider",
    "DeciderGauges",
    "DeciderStatus",
    "MetricClient",
    "MultiScaler",
    "NoDataError",
    "NotCollectingError",
    "PodsNotFoundError",
    "ScaleResult",
]

logger = logging.getLogger("autoscaler.scaling")

# Each decider evaluates every 2 s (§4.6); the scale-down-delay window uses the same granularity.
TICK_INTERVAL = 2.0

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def _int32(value: float) -> int:
    """Go's int32(float64) for the values that occur here: truncate toward zero, saturate."""
    if value != value:  # NaN
        return 0
    if value >= _INT32_MAX:
        return _INT32_MAX
    if value <= _INT32_MIN:
        return _INT32_MIN
    return int(value)


class NoDataError(LookupError):
    """The collection has a scrape target but no data within the stable window (§4.7 step 2)."""


class NotCollectingError(LookupError):
    """No collection exists for the revision."""


class PodsNotFoundError(LookupError):
    """Raised by a ready-count callable when the revision's pods/endpoints do not exist yet.

    Treated as 0 ready pods, like Kubernetes NotFound in Go; any other exception makes the
    evaluation invalid (§4.7 step 1).
    """


class MetricClient(Protocol):
    def stable_and_panic_concurrency(self, key: str, now: float) -> tuple[float, float]: ...

    def stable_and_panic_rps(self, key: str, now: float) -> tuple[float, float]: ...


@dataclass(frozen=True, slots=True)
class DeciderGauges:
    """The per-revision gauges of CONTRACT.md §4.7, as Go's decider records them (`metrics.go`).

    `scaling_metric` names the family (`kn.revision.concurrency.*` or `kn.revision.rps.*`) and is
    fixed when the decider is created, as Go registers its instruments once. Until the first valid
    evaluation every value is 0 except `panic_mode` (Go's initial state).
    """

    scaling_metric: str
    desired_pods: int = 0  # kn.revision.pods.desired
    excess_burst_capacity: float = 0.0  # kn.revision.capacity.excess (before the int32 cut)
    stable: float = 0.0  # kn.revision.{concurrency,rps}.stable
    panic: float = 0.0  # kn.revision.{concurrency,rps}.panic
    target: float = 0.0  # kn.revision.{concurrency,rps}.target
    panic_mode: int = 0  # kn.revision.panic.mode: 1 while panicking


@dataclass(frozen=True, slots=True)
class ScaleResult:
    desired_pod_count: int
    excess_burst_capacity: int
    scale_valid: bool
    # The gauges after this evaluation (None when invalid: Go records nothing then). Not part of
    # equality, so a result compares as Go's three-field ScaleResult.
    gauges: DeciderGauges | None = field(default=None, compare=False)


INVALID_RESULT = ScaleResult(0, 0, False)


class Autoscaler:
    """One revision's decider state: panic mode, max panic pods, scale-down delay window."""

    __slots__ = (
        "_clock",
        "_delay_window",
        "_metric_client",
        "_ready_count",
        "gauges",
        "key",
        "last",
        "max_panic_pods",
        "panic_time",
        "spec",
    )

    def __init__(
        self,
        key: str,
        metric_client: MetricClient,
        ready_count: Callable[[], int],
        spec: DeciderSpec,
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self._metric_client = metric_client
        self._ready_count = ready_count
        self._clock = clock
        self.spec = spec
        # Created once with the spec at creation time (§4.6 note), as Go does.
        self._delay_window = (
            MaxTimeWindow(spec.scale_down_delay, TICK_INTERVAL) if spec.scale_down_delay > 0 else None
        )
        try:
            current = ready_count()
        except Exception:
            # Always the case for a new revision: the decider exists before its endpoints.
            current = 0
        # §4.7 / §7: after a restart, a revision with > 1 ready pod starts in panic mode holding its
        # current scale, so losing the metric history does not scale it down.
        self.panic_time: float | None = clock() if current > 1 else None
        self.max_panic_pods = current
        self.gauges = DeciderGauges(
            RPS if spec.scaling_metric == RPS else CONCURRENCY, panic_mode=int(self.panic_time is not None)
        )
        self.last: Decision | None = None  # the last valid evaluation, for gauges and debug

    @property
    def panicking(self) -> bool:
        return self.panic_time is not None

    def update(self, spec: DeciderSpec) -> None:
        self.spec = spec

    def scale(self, now: float | None = None) -> ScaleResult:
        if now is None:
            now = self._clock()
        spec = self.spec

        # Step 1: ready pods; R = max(1, ready).
        try:
            ready = self._ready_count()
        except PodsNotFoundError:
            ready = 0
        except Exception:
            logger.exception("failed to get the ready pod count", extra={"fields": {"knative.dev/key": self.key}})
            return INVALID_RESULT
        r = float(max(1, ready))

        # Step 2: observed stable and panic values.
        try:
            if spec.scaling_metric == RPS:
                stable, panic = self._metric_client.stable_and_panic_rps(self.key, now)
            else:
                stable, panic = self._metric_client.stable_and_panic_concurrency(self.key, now)
        except NoDataError:
            logger.debug("no data to scale on yet", extra={"fields": {"knative.dev/key": self.key}})
            return INVALID_RESULT
        except Exception as exc:
            # Go's `err != nil` branch of Scale: any metric error means no decision for this
            # revision this tick; the other revisions' deciders are not affected (§4.7 step 2).
            logger.error(
                "failed to obtain metrics: %r", exc, extra={"fields": {"knative.dev/key": self.key}}
            )
            return INVALID_RESULT

        if not (math.isfinite(stable) and math.isfinite(panic)):
            logger.error(
                "non-finite metric values %r, %r", stable, panic, extra={"fields": {"knative.dev/key": self.key}}
            )
            return INVALID_RESULT

        # Step 3: rate limits. ceil() so a conservative up-rate still grows by at least one pod.
        max_scale_up = math.ceil(spec.max_scale_up_rate * r)
        max_scale_down = math.floor(r / spec.max_scale_down_rate) if spec.reachable else 0

        # Step 4: desired pods per window, clamped into [maxDown, maxUp].
        dspc = math.ceil(stable / spec.target_value)
        dppc = math.ceil(panic / spec.target_value)
        desired_stable = _int32(min(max(dspc, max_scale_down), max_scale_up))
        desired_panic = _int32(min(max(dppc, max_scale_down), max_scale_up))

        # Step 5: activation scale, only when there is some demand at all.
        activation = spec.activation_scale
        if activation > 1:
            if dspc > 0 and activation > desired_stable:
                desired_stable = activation
            if dppc > 0 and activation > desired_panic:
                desired_panic = activation

        # Step 6: entering, extending and leaving panic.
        over_threshold = dppc / r >= spec.panic_threshold
        if over_threshold:
            if self.panic_time is None:
                logger.info("PANICKING", extra={"fields": {"knative.dev/key": self.key}})
                self.gauges = replace(self.gauges, panic_mode=1)
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + spec.stable_window < now:
            logger.info("un-panicking", extra={"fields": {"knative.dev/key": self.key}})
            self.panic_time = None
            self.max_panic_pods = 0
            self.gauges = replace(self.gauges, panic_mode=0)

        # Step 7: never scale down while panicking.
        desired = desired_stable
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            desired = self.max_panic_pods

        # Step 8: scale-down delay — the max of the decisions of the last ScaleDownDelay. As in Go
        # the window, made once at creation (§4.6), applies while reachable even if a later spec
        # sets the delay to 0 (docs/DIFFERENCES.md explains why Sluice does not diverge here).
        before_delay = desired
        if self._delay_window is not None and spec.reachable:
            self._delay_window.record(now, desired)
            desired = int(self._delay_window.current())

        # Step 9: excess burst capacity, from the raw ready count and the panic value.
        tbc = spec.target_burst_capacity
        if tbc == 0:
            ebc = 0.0
        elif tbc > 0:
            ebc = float(math.floor(ready * spec.total_value - tbc - panic))
        else:
            ebc = -1.0
        # Two records of one evaluation: the §4.7 gauges as Go reports them, and the whole
        # evaluation with its intermediate steps for the debug endpoint (autoscaler/decision.py).
        gauges = self.gauges = DeciderGauges(
            self.gauges.scaling_metric, desired, ebc, stable, panic, spec.target_value, self.gauges.panic_mode
        )
        self.last = Decision(
            now, spec, ready, stable, panic, max_scale_up, max_scale_down, dspc, dppc, desired_stable,
            desired_panic, self.panic_time is not None, self.max_panic_pods, before_delay, desired, _int32(ebc),
        )  # fmt: skip
        return ScaleResult(desired, _int32(ebc), True, gauges)


@dataclass(frozen=True, slots=True)
class DeciderStatus:
    desired_scale: int = -1
    excess_burst_capacity: int = 0


@dataclass(frozen=True, slots=True)
class Decider:
    """A snapshot of one revision's decider (§4.6): what the KPA reconciler reads."""

    namespace: str
    name: str
    spec: DeciderSpec
    status: DeciderStatus


def _same_sign(a: int, b: int) -> bool:
    return (a < 0) == (b < 0)


class _Runner:
    __slots__ = ("decider", "next_tick", "scaler")

    def __init__(self, decider: Decider, scaler: Autoscaler, next_tick: float) -> None:
        self.decider = decider
        self.scaler = scaler
        self.next_tick = next_tick


class MultiScaler:
    """All deciders of this replica, keyed "<ns>/<name>" (§4.6).

    Ticking is driven from outside (`tick_due(now)` or the `run()` loop) so tests use a fake
    clock; each decider keeps its own 2 s phase from its creation time, like Go's per-decider
    tickers. A poke (§4.6) evaluates the decider at once.
    """

    def __init__(
        self,
        metric_client: MetricClient,
        ready_count: Callable[[str, str], int],
        clock: Callable[[], float],
        tick_interval: float = TICK_INTERVAL,
    ) -> None:
        self._metric_client = metric_client
        self._ready_count = ready_count
        self._clock = clock
        self.tick_interval = tick_interval
        self._runners: dict[str, _Runner] = {}
        self._watcher: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._runners)

    def watch(self, fn: Callable[[str], None]) -> None:
        """Registers the single callback told "<ns>/<name>" when a decider's status changes."""
        if self._watcher is not None:
            raise RuntimeError("multiple calls to watch() are not supported")
        self._watcher = fn

    def decisions(self) -> dict[str, Decision | None]:
        """Each decider's last valid evaluation, by "<ns>/<name>" (gauges, debug endpoint)."""
        return {key: runner.scaler.last for key, runner in self._runners.items()}

    def get(self, namespace: str, name: str) -> Decider | None:
        runner = self._runners.get(f"{namespace}/{name}")
        return None if runner is None else runner.decider

    def gauges(self, namespace: str, name: str) -> DeciderGauges | None:
        """The §4.7 gauges of one decider as last recorded (Go's observable-gauge callback)."""
        runner = self._runners.get(f"{namespace}/{name}")
        return None if runner is None else runner.scaler.gauges

    def all_gauges(self) -> dict[str, DeciderGauges]:
        """Every decider's gauges, keyed "<ns>/<name>" (a deleted decider's series stop, as Go's
        OnDelete unregisters them)."""
        return {key: runner.scaler.gauges for key, runner in self._runners.items()}

    def create(self, namespace: str, name: str, spec: DeciderSpec) -> Decider:
        """Returns the existing decider, or creates one with the §4.6 initial status."""
        key = f"{namespace}/{name}"
        runner = self._runners.get(key)
        if runner is None:
            tbc = spec.target_burst_capacity
            # EBC starts as if initial-scale pods were ready and idle (§4.6): e.g. defaults with
            # cc = 0 give 1 x 100 - 211 = -111, so the revision starts behind the activator.
            ebc = _int32(tbc) if tbc in (-1, 0) else _int32(spec.initial_scale * spec.total_value - tbc)
            decider = Decider(namespace, name, spec, DeciderStatus(-1, ebc))
            scaler = Autoscaler(
                key,
                self._metric_client,
                lambda: self._ready_count(namespace, name),
                spec,
                self._clock,
            )
            runner = _Runner(decider, scaler, self._clock() + self.tick_interval)
            self._runners[key] = runner
        return runner.decider

    def update(self, namespace: str, name: str, spec: DeciderSpec) -> Decider:
        """Replaces the spec of a running decider (panic state is kept); KeyError if missing."""
        runner = self._runners[f"{namespace}/{name}"]
        runner.decider = replace(runner.decider, spec=spec)
        runner.scaler.update(spec)
        return runner.decider

    def delete(self, namespace: str, name: str) -> None:
        self._runners.pop(f"{namespace}/{name}", None)

    def poke(self, key: str, stat: Stat) -> None:
        """Evaluates at once when a revision at scale 0 sees traffic (§4.6)."""
        runner = self._runners.get(key)
        if (
            runner is not None
            and runner.decider.status.desired_scale == 0
            and stat.average_concurrent_requests != 0
        ):
            self._tick(key, runner, self._clock())

    def tick(self, key: str, now: float | None = None) -> ScaleResult:
        """Evaluates one decider now; returns its result (also when invalid)."""
        return self._tick(key, self._runners[key], self._clock() if now is None else now)

    def tick_due(self, now: float | None = None) -> int:
        """Evaluates every decider whose 2 s tick is due; returns how many were evaluated."""
        if now is None:
            now = self._clock()
        count = 0
        for key, runner in list(self._runners.items()):
            if runner.next_tick <= now:
                # Advance by whole intervals: a late loop does not cause a burst of catch-up ticks.
                missed = math.floor((now - runner.next_tick) / self.tick_interval)
                runner.next_tick += (missed + 1) * self.tick_interval
                count += 1
                try:
                    self._tick(key, runner, now)
                except Exception:
                    # Go runs every decider on its own ticker: one revision's failure must not
                    # cost the others their evaluation this tick.
                    logger.exception("decider tick failed", extra={"fields": {"knative.dev/key": key}})
        return count

    def _tick(self, key: str, runner: _Runner, now: float) -> ScaleResult:
        result = runner.scaler.scale(now)
        if not result.scale_valid:
            return result
        old = runner.decider.status
        changed = old.desired_scale != result.desired_pod_count or not _same_sign(
            old.excess_burst_capacity, result.excess_burst_capacity
        )
        # The EBC value is always stored, the PA is enqueued only on a change that matters.
        if (
            old.desired_scale != result.desired_pod_count
            or old.excess_burst_capacity != result.excess_burst_capacity
        ):
            runner.decider = replace(
                runner.decider, status=DeciderStatus(result.desired_pod_count, result.excess_burst_capacity)
            )
        if changed and self._watcher is not None:
            self._watcher(key)
        return result

    async def run(self, granularity: float = 0.1) -> None:
        """Ticks due deciders until cancelled. `granularity` bounds how late a tick can be."""
        async def tick() -> None:
            self.tick_due()

        await run_every(granularity, tick, name="multiscaler deciders", logger=logger)
