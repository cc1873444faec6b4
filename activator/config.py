"""The activator's configuration (CONTRACT.md §3.1): the environment, plus the few
`config-network` / `config-observability` keys it reads once at start.

`SLUICE_*` variables exist for tests, benchmarks and `sluice local`, where several
components share one machine (fixed ports would clash) and the autoscaler is not
reachable at its cluster DNS name; an activator pod in Knative never sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config import Reader, cluster_domain
from sluice.telemetry.config import ObservabilitySettings

__all__ = [
    "MESH_AUTO",
    "MESH_DISABLED",
    "MESH_ENABLED",
    "ActivatorConfig",
    "NetworkConfig",
    "ObservabilityConfig",
]

MESH_AUTO = "auto"
MESH_ENABLED = "enabled"
MESH_DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class ActivatorConfig:
    pod_name: str
    pod_ip: str
    system_namespace: str
    config_logging_name: str
    config_observability_name: str
    max_idle_proxy_conns: int
    max_idle_proxy_conns_per_host: int
    probe_timeout: float
    probe_frequency: float
    cluster_domain: str
    # Sluice-only overrides (never set in a Knative pod).
    bind_host: str
    http1_port: int
    h2c_port: int
    metrics_port: int
    autoscaler_url: str
    kubeconfig: str
    drain_sleep: float
    queue_depth: int
    mesh_compatibility_mode: str  # "" = read config-network
    # System-internal TLS (§3.1, §3.2, §3.7), used only with `system-internal-tls: Enabled`.
    https_port: int = 8112  # SLUICE_HTTPS_PORT
    tls_min_version: str = ""  # ACTIVATOR_TLS_MIN_VERSION: "" (= 1.3), "1.2", "1.3"
    tls_max_version: str = ""  # ACTIVATOR_TLS_MAX_VERSION
    queue_tls_port: int = 8112  # SLUICE_QUEUE_TLS_PORT: the pods' TLS port (§3.7 `<podIP>:8112`)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], resolv_conf: str = "/etc/resolv.conf") -> ActivatorConfig:
        r = Reader(environ, "activator environment")
        ns = r.str("SYSTEM_NAMESPACE", "knative-serving")
        domain = cluster_domain(environ, resolv_conf)
        mesh = r.str("SLUICE_MESH_COMPATIBILITY_MODE").strip().lower()
        if mesh not in ("", MESH_AUTO, MESH_ENABLED, MESH_DISABLED):
            r.fail("SLUICE_MESH_COMPATIBILITY_MODE", f"{mesh!r} is not one of auto, enabled, disabled")
        # §3.1: TLS server options in the queue-proxy's format.
        tls_min = r.str("ACTIVATOR_TLS_MIN_VERSION").strip()
        tls_max = r.str("ACTIVATOR_TLS_MAX_VERSION").strip()
        for key, value in (("ACTIVATOR_TLS_MIN_VERSION", tls_min), ("ACTIVATOR_TLS_MAX_VERSION", tls_max)):
            if value not in ("", "1.2", "1.3"):
                r.fail(key, f"{value!r} is not one of '', '1.2', '1.3'")
        cfg = cls(
            pod_name=r.str("POD_NAME", required=True),
            pod_ip=r.str("POD_IP", required=True),
            system_namespace=ns,
            config_logging_name=r.str("CONFIG_LOGGING_NAME", "config-logging"),
            config_observability_name=r.str("CONFIG_OBSERVABILITY_NAME", "config-observability"),
            max_idle_proxy_conns=r.int("MAX_IDLE_PROXY_CONNS", 1000, minimum=0),
            max_idle_proxy_conns_per_host=r.int("MAX_IDLE_PROXY_CONNS_PER_HOST", 100, minimum=0),
            probe_timeout=r.duration("PROBE_TIMEOUT", 0.3, minimum=0.001),
            probe_frequency=r.duration("PROBE_FREQUENCY", 0.2, minimum=0.001),
            cluster_domain=domain,
            bind_host=r.str("SLUICE_BIND_HOST", "0.0.0.0"),
            http1_port=r.port("SLUICE_HTTP1_PORT", 8012),
            h2c_port=r.port("SLUICE_H2C_PORT", 8013),
            metrics_port=r.port("SLUICE_METRICS_PORT", 9090),
            # §3.8: ws://autoscaler.<system-ns>.svc.<cluster-domain>:8080, path "/".
            autoscaler_url=r.str("SLUICE_AUTOSCALER_URL", f"ws://autoscaler.{ns}.svc.{domain}:8080/"),
            kubeconfig=r.str("SLUICE_KUBECONFIG", environ.get("KUBECONFIG", "")),
            drain_sleep=r.float("SLUICE_DRAIN_SLEEP", 45.0, minimum=0.0),
            # The revision breaker's queue depth (Go's breakerQueueDepth); 0 is invalid there.
            queue_depth=r.int("SLUICE_QUEUE_DEPTH", 10_000, minimum=1),
            mesh_compatibility_mode=mesh,
            https_port=r.port("SLUICE_HTTPS_PORT", 8112),
            tls_min_version=tls_min,
            tls_max_version=tls_max,
            queue_tls_port=r.port("SLUICE_QUEUE_TLS_PORT", 8112),
        )
        r.check()
        return cfg


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """`config-network` keys the activator reads once at start (§3.1)."""

    enable_mesh_pod_addressability: bool = False
    mesh_compatibility_mode: str = MESH_AUTO
    system_internal_tls: bool = False

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> NetworkConfig:
        r = Reader(data, "config-network")
        mode = r.str("mesh-compatibility-mode", MESH_AUTO).strip().lower() or MESH_AUTO
        if mode not in (MESH_AUTO, MESH_ENABLED, MESH_DISABLED):
            r.fail("mesh-compatibility-mode", f"{mode!r} is not one of auto, enabled, disabled")
        tls = r.str("system-internal-tls", "Disabled").strip().lower() == "enabled"
        cfg = cls(
            enable_mesh_pod_addressability=r.bool("enable-mesh-pod-addressability"),
            mesh_compatibility_mode=mode,
            system_internal_tls=tls,
        )
        r.check()
        return cfg


# `config-observability` (§3.10): metrics and tracing export, parsed by the shared telemetry config.
ObservabilityConfig = ObservabilitySettings
