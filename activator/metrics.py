"""Activator metrics on :9090 (CONTRACT.md §3.10), exported only when
`config-observability` says `metrics-protocol: prometheus`.

Nothing is recorded per request: every value is read from live state when scraped
(the throttlers' queued / active counts, the last concurrency reported per
revision, the websocket state), so the hot path pays nothing for metrics. Names are
what OTel's Prometheus exporter makes of Knative's instruments (dots → underscores,
counters get `_total`).
"""

from __future__ import annotations

from collections.abc import Callable

from sluice.http.server import HttpExchange

from .revision import RevKey
from .revisions import Revisions

__all__ = ["CONTENT_TYPE", "MetricsHandler", "render"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(revisions: Revisions, key: RevKey) -> str:
    entry = revisions.get(key)
    service = entry.info.service if entry is not None else ""
    configuration = entry.info.configuration if entry is not None else ""
    return (
        f'k8s_namespace_name="{_esc(key[0])}",kn_configuration_name="{_esc(configuration)}",'
        f'kn_revision_name="{_esc(key[1])}",kn_service_name="{_esc(service)}"'
    )


def render(
    revisions: Revisions,
    concurrency: dict[RevKey, float],
    reachable: bool,
    conn_errors: int,
) -> bytes:
    lines = [
        "# HELP kn_revision_request_concurrency Concurrent requests reported to the autoscaler",
        "# TYPE kn_revision_request_concurrency gauge",
    ]
    for key, value in sorted(concurrency.items()):
        lines.append(f"kn_revision_request_concurrency{{{_labels(revisions, key)}}} {value:g}")
    lines += [
        "# HELP kn_revision_request_queued Requests waiting in the throttler",
        "# TYPE kn_revision_request_queued gauge",
    ]
    entries = sorted(revisions.entries.items())
    for key, entry in entries:
        lines.append(f"kn_revision_request_queued{{{_labels(revisions, key)}}} {entry.throttler.live_waiting}")
    lines += [
        "# HELP kn_revision_request_active Requests being proxied",
        "# TYPE kn_revision_request_active gauge",
    ]
    for key, entry in entries:
        lines.append(f"kn_revision_request_active{{{_labels(revisions, key)}}} {entry.throttler.in_flight}")
    lines += [
        "# HELP kn_activator_stats_conn_reachable Whether the autoscaler websocket is connected",
        "# TYPE kn_activator_stats_conn_reachable gauge",
        f"kn_activator_stats_conn_reachable {1 if reachable else 0}",
        "# HELP kn_activator_stats_conn_errors_total Autoscaler websocket connection errors",
        "# TYPE kn_activator_stats_conn_errors_total counter",
        f"kn_activator_stats_conn_errors_total {conn_errors}",
    ]
    return ("\n".join(lines) + "\n").encode()


class MetricsHandler:
    """`GET /metrics` on the engine's HttpServer; other paths 404."""

    def __init__(self, source: Callable[[], bytes]) -> None:
        self.source = source

    def __call__(self, ex: HttpExchange) -> None:
        url = ex.url
        cut = url.find(b"?")
        path = url if cut < 0 else url[:cut]
        if path != b"/metrics":
            ex.respond_error(404, "404 page not found")
            return
        ex.respond_text(200, self.source(), content_type=CONTENT_TYPE)
