"""Revision identification (§3.3), RevisionInfo (§3.4–§3.6), the concurrency reporter
(§3.8), configuration (§3.1), backoff, endpoints parsing and slicing input — pure."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from activator.backends import Dests, endpoints_dests, is_private_endpoints
from activator.config import ActivatorConfig, NetworkConfig, ObservabilityConfig
from activator.handler import go_html_escape
from activator.reporter import backoff_delays
from activator.revision import RevisionInfo, identify
from activator.revisions import activator_slice
from activator.stats import ConcurrencyReporter
from sluice.config import ConfigError
from sluice.wire import Stat

from .conftest import private_endpoints_body, public_endpoints_body, revision_body


@pytest.mark.parametrize(
    ("rev", "ns", "host", "expected"),
    [
        (b"r", b"n", b"anything", ("n", "r")),
        (b"r", None, b"x.y.svc.cluster.local", ("y", "x")),  # header half-set: Host fallback
        (None, None, b"x.y.svc.cluster.local", ("y", "x")),
        (None, None, b"x.y.svc.cluster.local:8080", ("y", "x")),
        (None, None, b"x.y.svc.other.local", None),
        (None, None, b"x.y.svc", None),
        (None, None, b"x.y.z.cluster.local", None),
        (None, None, b"hello.example.com", None),
        (None, None, None, None),
        (b"", b"n", b"", None),
    ],
)
def test_identify(rev: bytes | None, ns: bytes | None, host: bytes | None, expected: tuple[str, str] | None) -> None:
    assert identify(rev, ns, host, b"cluster.local") == expected


def test_revision_info_from_object() -> None:
    obj = revision_body("r1", cc=3, timeout=60, responseStartTimeoutSeconds=5, idleTimeoutSeconds=7)
    obj["metadata"]["namespace"] = "ns"
    info = RevisionInfo.from_object(obj)
    assert (info.key, info.container_concurrency, info.timeout_seconds) == (("ns", "r1"), 3, 60)
    assert (info.response_start_timeout_seconds, info.idle_timeout_seconds) == (5, 7)
    assert info.probe_optimisation and not info.h2c and info.port_name == "http"
    assert (info.service, info.configuration) == ("hello", "hello")

    h2c = revision_body("r2", timeout=None)
    h2c["spec"]["containers"][0]["ports"] = [{"name": "h2c", "containerPort": 8080}]
    h2c["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}}
    info = RevisionInfo.from_object(h2c)
    assert info.h2c and info.port_name == "http2" and info.timeout_seconds == 300
    assert not info.probe_optimisation  # exec readiness probe: wait for Kubernetes readiness

    sidecar = revision_body("r3")
    sidecar["spec"]["containers"].append({"name": "side", "image": "x", "startupProbe": {"tcpSocket": {"port": 1}}})
    assert not RevisionInfo.from_object(sidecar).probe_optimisation


def test_concurrency_reporter_first_request_and_offsets() -> None:
    rep = ConcurrencyReporter("act-1")
    key = ("ns", "rev")
    stats, first = rep.request_in(key, 0.0)
    assert first is not None and first.stat == Stat(
        pod_name="act-1", average_concurrent_requests=1.0, request_count=1.0
    )
    _, again = rep.request_in(key, 0.5)
    assert again is None
    stats.request_out(1.0)
    stats.request_out(1.0)
    # Window [0, 1]: concurrency 1 for 0.5 s, 2 for 0.5 s -> 1.5; 2 requests; minus the first-report offset.
    [msg] = rep.report(1.0)
    assert msg.stat == Stat(pod_name="act-1", average_concurrent_requests=0.5, request_count=1.0)
    # Idle for a whole period: reported (zero) once more, then deleted.
    [msg] = rep.report(2.0)
    assert msg.stat == Stat(pod_name="act-1")
    assert rep.report(3.0) == [] and not rep.stats
    # A new accumulator sends the immediate report again.
    _, first = rep.request_in(key, 3.5)
    assert first is not None


def test_concurrency_never_reported_negative() -> None:
    rep = ConcurrencyReporter("a")
    stats, _ = rep.request_in(("n", "r"), 0.0)
    stats.request_out(0.1)
    [msg] = rep.report(1.0)
    assert msg.stat is not None
    assert msg.stat.average_concurrent_requests == 0.0  # max(0.1 - 1, 0)
    assert msg.stat.request_count == 0.0


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search ns.svc.example.org svc.example.org example.org\n")
    cfg = ActivatorConfig.from_env({"POD_NAME": "a", "POD_IP": "10.0.0.9"}, str(resolv))
    assert cfg.cluster_domain == "example.org"
    assert cfg.autoscaler_url == "ws://autoscaler.knative-serving.svc.example.org:8080/"
    assert (cfg.http1_port, cfg.h2c_port, cfg.metrics_port) == (8012, 8013, 9090)
    assert (cfg.probe_timeout, cfg.probe_frequency, cfg.drain_sleep) == (0.3, 0.2, 45.0)
    assert (cfg.max_idle_proxy_conns, cfg.max_idle_proxy_conns_per_host, cfg.queue_depth) == (1000, 100, 10_000)
    cfg = ActivatorConfig.from_env(
        {
            "POD_NAME": "a",
            "POD_IP": "1",
            "PROBE_TIMEOUT": "1s",
            "SLUICE_AUTOSCALER_URL": "ws://127.0.0.1:1/",
            "CLUSTER_DOMAIN": "c.local.",
        },
        str(resolv),
    )
    assert (cfg.probe_timeout, cfg.autoscaler_url, cfg.cluster_domain) == (1.0, "ws://127.0.0.1:1/", "c.local")
    with pytest.raises(ConfigError) as err:
        ActivatorConfig.from_env({"PROBE_FREQUENCY": "fast", "SLUICE_MESH_COMPATIBILITY_MODE": "x"}, str(resolv))
    text = str(err.value)
    for key in ("POD_NAME", "POD_IP", "PROBE_FREQUENCY", "SLUICE_MESH_COMPATIBILITY_MODE"):
        assert key in text


def test_configmaps() -> None:
    net = NetworkConfig.from_configmap(
        {
            "mesh-compatibility-mode": "Disabled",
            "enable-mesh-pod-addressability": "true",
            "system-internal-tls": "Enabled",
        }
    )
    assert (net.mesh_compatibility_mode, net.enable_mesh_pod_addressability, net.system_internal_tls) == (
        "disabled",
        True,
        True,
    )
    assert NetworkConfig.from_configmap({}) == NetworkConfig()
    with pytest.raises(ConfigError):
        NetworkConfig.from_configmap({"mesh-compatibility-mode": "sometimes"})
    assert ObservabilityConfig.from_configmap({"metrics-protocol": "prometheus"}).metrics.protocol == "prometheus"
    assert not ObservabilityConfig.from_configmap({}).metrics.enabled


def test_backoff_sequence_restarts() -> None:
    delays = backoff_delays(random.Random(0))
    first = [next(delays) for _ in range(21)]
    for k in range(20):
        base = 0.1 * 1.3**k
        assert base <= first[k] <= base * 1.5
    assert 0.1 <= first[20] <= 0.15  # after 20 steps the sequence starts over


def test_endpoints_parsing() -> None:
    body = private_endpoints_body("r", [("10.0.0.1", 8012), ("10.0.0.2", 8012)], [("10.0.0.3", 8012)])
    assert is_private_endpoints(body["metadata"]["labels"])
    assert endpoints_dests(body, "http") == Dests(
        frozenset({"10.0.0.1:8012", "10.0.0.2:8012"}), frozenset({"10.0.0.3:8012"})
    )
    assert endpoints_dests(body, "http2") == Dests()
    prev = Dests(frozenset({"a", "b"}), frozenset())
    cur = Dests(frozenset({"a"}), frozenset({"b"}))
    assert cur.became_not_ready(prev) == {"b"}
    assert not is_private_endpoints({"networking.internal.knative.dev/serviceType": "Private"})


def test_activator_slice_sorts_ips_as_strings() -> None:
    body = public_endpoints_body("r", ["10.0.0.10", "10.0.0.9", "10.0.0.100"])
    # "10.0.0.10" < "10.0.0.100" < "10.0.0.9" lexicographically.
    assert activator_slice(body, "http", "10.0.0.9") == (3, 2)
    assert activator_slice(body, "http", "10.0.0.100") == (3, 1)
    assert activator_slice(body, "http", "10.0.0.1") is None  # not in the path
    assert activator_slice(body, "http2", "10.0.0.9") is None


def test_go_html_escape() -> None:
    assert go_html_escape("<a href='x'>&\"") == "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"
