"""The queue-proxy's configuration, from the environment only (CONTRACT.md §2.1).

Variables the Go binary requires must be present (empty strings are accepted for
string fields, integers must parse). A few `SLUICE_*` variables exist for tests,
benchmarks and `sluice local`, where several queue-proxies share one machine and
the fixed admin/metrics ports would clash; a Knative pod never sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config import Reader

__all__ = ["QueueProxyConfig"]


@dataclass(frozen=True, slots=True)
class QueueProxyConfig:
    serving_namespace: str
    serving_service: str
    serving_configuration: str
    serving_revision: str
    serving_pod: str
    serving_pod_ip: str
    queue_serving_port: int
    queue_serving_tls_port: int
    user_port: int
    container_concurrency: int
    revision_timeout_seconds: int
    revision_response_start_timeout_seconds: int
    revision_idle_timeout_seconds: int
    serving_readiness_probe: str
    enable_multi_container_probes: bool
    enable_http2_auto_detection: bool
    enable_http_full_duplex: bool
    serving_logging_config: str
    serving_logging_level: str
    observability_config: str
    system_namespace: str
    tls_min_version: str
    tls_max_version: str
    # Sluice-only overrides (never set in a Knative pod).
    bind_host: str
    admin_port: int
    metrics_port: int
    user_metrics_port: int | None  # METRICS_PROMETHEUS_PORT override of the 9091 listener
    drain_quiet_period: float
    shutdown_in_flight_timeout: float
    cert_dir: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> QueueProxyConfig:
        r = Reader(environ, "queue-proxy environment")
        cc = r.int("CONTAINER_CONCURRENCY", required=True, minimum=0)
        timeout = r.int("REVISION_TIMEOUT_SECONDS", required=True, minimum=0)
        tls_min = r.str("QUEUE_PROXY_TLS_MIN_VERSION")
        tls_max = r.str("QUEUE_PROXY_TLS_MAX_VERSION")
        for key, value in (("QUEUE_PROXY_TLS_MIN_VERSION", tls_min), ("QUEUE_PROXY_TLS_MAX_VERSION", tls_max)):
            if value not in ("", "1.2", "1.3"):
                r.fail(key, f"{value!r} is not one of '', '1.2', '1.3'")
        cfg = cls(
            serving_namespace=r.str("SERVING_NAMESPACE", required=True),
            serving_service=r.str("SERVING_SERVICE"),
            serving_configuration=r.str("SERVING_CONFIGURATION", required=True),
            serving_revision=r.str("SERVING_REVISION", required=True),
            serving_pod=r.str("SERVING_POD", required=True),
            serving_pod_ip=r.str("SERVING_POD_IP", required=True),
            queue_serving_port=r.port("QUEUE_SERVING_PORT", required=True),
            queue_serving_tls_port=r.port("QUEUE_SERVING_TLS_PORT", required=True),
            user_port=r.port("USER_PORT", required=True),
            container_concurrency=cc,
            revision_timeout_seconds=timeout,
            revision_response_start_timeout_seconds=r.int("REVISION_RESPONSE_START_TIMEOUT_SECONDS", minimum=0),
            revision_idle_timeout_seconds=r.int("REVISION_IDLE_TIMEOUT_SECONDS", minimum=0),
            serving_readiness_probe=r.str("SERVING_READINESS_PROBE"),
            enable_multi_container_probes=r.bool("ENABLE_MULTI_CONTAINER_PROBES"),
            enable_http2_auto_detection=r.bool("ENABLE_HTTP2_AUTO_DETECTION"),
            enable_http_full_duplex=r.bool("ENABLE_HTTP_FULL_DUPLEX"),
            serving_logging_config=r.str("SERVING_LOGGING_CONFIG", required=True),
            serving_logging_level=r.str("SERVING_LOGGING_LEVEL", required=True),
            observability_config=r.str("OBSERVABILITY_CONFIG"),
            system_namespace=r.str("SYSTEM_NAMESPACE", "knative-serving"),
            tls_min_version=tls_min,
            tls_max_version=tls_max,
            bind_host=r.str("SLUICE_BIND_HOST", "0.0.0.0"),
            admin_port=r.port("SLUICE_ADMIN_PORT", 8022),
            metrics_port=r.port("SLUICE_METRICS_PORT", 9090),
            user_metrics_port=r.port("METRICS_PROMETHEUS_PORT") if "METRICS_PROMETHEUS_PORT" in environ else None,
            drain_quiet_period=r.float("SLUICE_DRAIN_QUIET_PERIOD", 30.0, minimum=0.0),
            # 0 (unset): open requests get up to the revision timeout (see long_lived_deadline).
            shutdown_in_flight_timeout=r.float("SLUICE_SHUTDOWN_IN_FLIGHT_TIMEOUT", 0.0, minimum=0.0),
            cert_dir=r.str("SLUICE_CERT_DIR", "/var/lib/knative/certs"),
        )
        r.check()
        return cfg

    @property
    def log_key(self) -> str:
        return f"{self.serving_namespace}/{self.serving_revision}"
