"""Knative's validating webhook (`validation.webhook.serving.knative.dev`) for what `sluice local`
accepts: the `autoscaling.knative.dev/*` annotations and the revision template's numeric bounds,
with Knative's messages (knative.dev/serving pkg/apis/autoscaling/annotation_validation.go,
pkg/apis/serving/metadata_validation.go; knative.dev/pkg apis.FieldError).

Two callers: the embedded API admits Services/Configurations/Revisions through `admission_hook`
(so `kubectl apply` is refused as on a cluster), and `sluice local apply` checks manifests before
sending them (`manifest.py`). One deliberate addition to Knative: an `autoscaling.knative.dev/`
key that is not one of Knative's is refused (`invalid key name`), as Knative already does for
unknown `serving.knative.dev/` keys; a typo such as `targt` would otherwise be silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.config import parse_go_duration

__all__ = [
    "WEBHOOK",
    "FieldError",
    "admission_hook",
    "autoscaling_errors",
    "knative_errors",
    "render",
]

WEBHOOK = "validation.webhook.serving.knative.dev"
GROUP = "autoscaling.knative.dev/"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
INT32_MAX = 2**31 - 1
WINDOW_MIN, WINDOW_MAX = 6.0, 3600.0
TARGET_MIN = 0.01
# config-defaults (Knative's defaults; `sluice local` does not change them).
MAX_CONTAINER_CONCURRENCY = 1000
MAX_REVISION_TIMEOUT = 600

# Knative's kmap.KeyPriority lists: the first key is the current name, the others still accepted.
KEYS: dict[str, tuple[str, ...]] = {
    "class": (),
    "metric": (),
    "target": (),
    "window": (),
    "activation-scale": (),
    "min-scale": ("minScale",),
    "max-scale": ("maxScale",),
    "initial-scale": ("initialScale",),
    "target-utilization-percentage": ("targetUtilizationPercentage",),
    "target-burst-capacity": ("targetBurstCapacity",),
    "panic-window-percentage": ("panicWindowPercentage",),
    "panic-threshold-percentage": ("panicThresholdPercentage",),
    "scale-down-delay": ("scaleDownDelay",),
    "scale-to-zero-pod-retention-period": ("scaleToZeroPodRetentionPeriod",),
    "metric-aggregation-algorithm": ("metricAggregationAlgorithm",),
}
_KNOWN = {GROUP + k for name, alts in KEYS.items() for k in (name, *alts)}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One apis.FieldError: `message`, the field path relative to the annotations (the key, or ""
    for the map itself), and optional details printed on the next line."""

    message: str
    key: str = ""
    details: str = ""


def _get(anns: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    for k in (name, *KEYS[name]):
        if GROUP + k in anns:
            return GROUP + k, str(anns[GROUP + k])
    return None


def _go_duration(seconds: float) -> str:
    """time.Duration.String() for whole seconds: 0s, 6s, 1m30s, 1h0m0s."""
    s = int(seconds)
    if s == 0:
        return "0s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    return f"{m}m{sec}s" if m else f"{sec}s"


def _go_float(v: float) -> str:
    return f"{v:g}"


def _bounds(v: str, lo: str, hi: str, key: str) -> FieldError:
    return FieldError(f"expected {lo} <= {v} <= {hi}", key)


def _invalid(v: str, key: str) -> FieldError:
    return FieldError(f"invalid value: {v}", key)


def _float(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _int32(v: str) -> int | None:
    try:
        i = int(v, 10)
    except ValueError:
        return None
    return i


def _duration(v: str) -> float | None:
    try:
        return parse_go_duration(v)
    except ValueError:
        return None


def _in_range(
    errs: list[FieldError],
    anns: Mapping[str, Any],
    name: str,
    parse: Callable[[str], float | None],
    lo: float,
    hi: float,
    show: Callable[[float], str],
) -> float | None:
    """An annotation parsed and bounded: `invalid value: v` or `expected lo <= v <= hi`; the
    value when it is within bounds."""
    got = _get(anns, name)
    if got is None:
        return None
    k, v = got
    parsed = parse(v)
    if parsed is None:
        errs.append(_invalid(v, k))
    elif not lo <= parsed <= hi:
        errs.append(_bounds(v, show(lo), show(hi), k))
    else:
        return parsed
    return None


def autoscaling_errors(anns: Mapping[str, Any], allow_zero_initial_scale: bool = True) -> list[FieldError]:
    """ValidateAnnotations of a revision template's annotations (plus the unknown-key check)."""
    errs: list[FieldError] = []
    for key in anns:
        if isinstance(key, str) and key.startswith(GROUP) and key not in _KNOWN:
            close = difflib.get_close_matches(key, sorted(_KNOWN), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            errs.append(FieldError(f'invalid key name "{key}"', "", f"unknown autoscaling annotation{hint}"))
    cls = _get(anns, "class")
    if cls is not None:
        k, v = cls
        if v.endswith("autoscaling.knative.dev") and v not in (KPA, HPA):
            errs.append(_invalid(v, k))
        elif v == HPA:
            errs.append(
                FieldError(f"invalid value: {v} (the HPA class needs a Kubernetes cluster; sluice local runs {KPA})", k)
            )
    errs += _min_max(anns)
    errs += _floats(anns)
    # (name, lower bound, needs whole seconds): window 6s-1h, the two delays 0-1h.
    for name, lo, whole in (
        ("window", WINDOW_MIN, True),
        ("scale-to-zero-pod-retention-period", 0.0, False),
        ("scale-down-delay", 0.0, True),
    ):
        d = _in_range(errs, anns, name, _duration, lo, WINDOW_MAX, _go_duration)
        got = _get(anns, name)
        if d is not None and got is not None and whole and d != int(d):
            errs.append(FieldError("must be specified with at most second precision", got[0]))
    metric = _get(anns, "metric")
    if metric is not None:
        k, v = metric
        klass = cls[1] if cls is not None else KPA
        if (klass == KPA and v not in ("concurrency", "rps")) or (klass == HPA and v == ""):
            errs.append(_invalid(v, k))
    algo = _get(anns, "metric-aggregation-algorithm")
    # Only an explicit KPA class is checked: other autoscalers may take other values.
    valid_algo = ("linear", "weighted-exponential", "weightedExponential")
    if algo is not None and cls is not None and cls[1] == KPA and algo[1] and algo[1] not in valid_algo:
        errs.append(_invalid(algo[1], algo[0]))
    init = _get(anns, "initial-scale")
    if init is not None:
        k, v = init
        i = _int32(v)
        if i is None:
            errs.append(_invalid(v, k))
        elif i < 0:
            errs.append(_invalid(v, f"{k} must be greater than 0"))
        elif i == 0 and not allow_zero_initial_scale:
            errs.append(_invalid(v, f"{k}=0 not allowed by cluster"))
    return errs


def _min_max(anns: Mapping[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    values: dict[str, int] = {}
    for name in ("min-scale", "max-scale"):
        i = _in_range(errs, anns, name, _int32, 0, INT32_MAX, lambda x: str(int(x)))
        values[name] = int(i) if i is not None else 0
    lo, hi = values["min-scale"], values["max-scale"]
    if hi != 0 and hi < lo:
        errs.append(
            FieldError(f"max-scale={hi} is less than min-scale={lo}", GROUP + "max-scale, " + GROUP + "min-scale")
        )
    act = _get(anns, "activation-scale")
    if act is not None:
        k, v = act
        nz = _int32(v)
        if nz is None:
            errs.append(_invalid(v, k))
        elif lo > nz:
            errs.append(FieldError(f"min-scale={lo} is greater than min-activate-scale={nz}", k))
        elif hi != 0 and hi < nz:
            errs.append(FieldError(f"max-scale={hi} is less than min-activate-scale={nz}", k))
        elif nz < 2:
            errs.append(FieldError(f"min-activate-scale={nz} must be greater than 1", k))
    return errs


def _floats(anns: Mapping[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for name, lo, hi in (
        ("panic-window-percentage", 1.0, 100.0),
        ("panic-threshold-percentage", 110.0, 1000.0),
        ("target-utilization-percentage", 1.0, 100.0),
    ):
        _in_range(errs, anns, name, _float, lo, hi, _go_float)
    target = _get(anns, "target")
    if target is not None:
        k, v = target
        f = _float(v)
        if f is None:
            errs.append(_invalid(v, k))
        elif f < TARGET_MIN:
            errs.append(FieldError(f"target {v} should be at least {TARGET_MIN:g}", k))
    tbc = _get(anns, "target-burst-capacity")
    if tbc is not None:
        k, v = tbc
        f = _float(v)
        if f is None or (f < 0 and f != -1):
            errs.append(_invalid(v, k))
    return errs


def _no_autoscaling(anns: Mapping[str, Any]) -> list[FieldError]:
    """ValidateHasNoAutoscalingAnnotation: Services and Configurations carry them on the template."""
    return [
        FieldError(
            f'invalid key name "{k}"',
            "",
            'autoscaling annotations must be put under "spec.template.metadata.annotations" to work',
        )
        for k in anns
        if isinstance(k, str) and k.startswith(GROUP)
    ]


def _int_bound(spec: Mapping[str, Any], key: str, hi: int, path: str) -> list[tuple[str, FieldError]]:
    v = spec.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= hi:
        return [(path, FieldError(f"expected 0 <= {v} <= {hi}", key))]
    return []


def knative_errors(
    kind: str, obj: Mapping[str, Any], allow_zero_initial_scale: bool = True
) -> list[tuple[str, FieldError]]:
    """(annotations-or-spec path, error) pairs for a Service, Configuration or Revision."""
    out: list[tuple[str, FieldError]] = []
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    anns = (meta or {}).get("annotations") or {}
    if kind == "Revision":
        out += [("metadata.annotations", e) for e in autoscaling_errors(anns, allow_zero_initial_scale)]
        rev_spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        spec_path = "spec"
    else:
        if isinstance(anns, dict):
            out += [("metadata.annotations", e) for e in _no_autoscaling(anns)]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        template = (spec or {}).get("template") if isinstance((spec or {}).get("template"), dict) else {}
        tmeta = (template or {}).get("metadata") if isinstance((template or {}).get("metadata"), dict) else {}
        tanns = (tmeta or {}).get("annotations") or {}
        if isinstance(tanns, dict):
            out += [
                ("spec.template.metadata.annotations", e) for e in autoscaling_errors(tanns, allow_zero_initial_scale)
            ]
        rev_spec = (template or {}).get("spec") if isinstance((template or {}).get("spec"), dict) else {}
        spec_path = "spec.template.spec"
    out += _int_bound(rev_spec or {}, "containerConcurrency", MAX_CONTAINER_CONCURRENCY, spec_path)
    out += _int_bound(rev_spec or {}, "timeoutSeconds", MAX_REVISION_TIMEOUT, spec_path)
    return out


def render(errs: list[tuple[str, FieldError]]) -> str:
    """apis.FieldError.Error(): `message: path` (details on the next line), sorted, one per line."""
    lines = []
    for base, e in errs:
        paths = [p.strip() for p in e.key.split(", ")] if e.key else [""]
        full = ", ".join(f"{base}.{p}" if p else base for p in paths)
        lines.append(f"{e.message}: {full}" + (f"\n{e.details}" if e.details else ""))
    return "\n".join(sorted(lines))


def _allow_zero_initial_scale(config: Mapping[str, Any] | None) -> bool:
    data = (config or {}).get("data") or {}
    return str(data.get("allow-zero-initial-scale", "false")).lower() == "true"


def admission_hook(req: Any) -> str:
    """The embedded API's admission hook for serving.knative.dev Services, Configurations and
    Revisions (`kubeapi.fields.AdmissionRequest`); reads config-autoscaler as the webhook does."""
    config = req.lookup("", "configmaps", "knative-serving", "config-autoscaler")
    errs = knative_errors(req.rt.kind, req.obj, _allow_zero_initial_scale(config))
    return "validation failed: " + render(errs) if errs else ""
