"""The builtin queries against a REAL Prometheus scraping real apps while real traffic flows.

Two app servers (primary and canary) export prometheus-client's ``http_request_duration_seconds``
histogram; a small proxy in front of them routes alternately to each and exports Envoy's stats names
(upstream per cluster, and caller-side per backend as canaryctl.mesh.telemetry defines them). The
proxy aborts every 10th canary request with 503 before forwarding, like Envoy's fault filter: upstream
stats miss those, caller-side stats see them.

Traffic: 200 requests -> 100 primary (all 200, fast) and 100 canary (10 aborted by the proxy; of
the 90 forwarded, every 5th answers 500, ~60 ms each).
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from canaryctl.api.models import Canary, CanaryMetric
from canaryctl.mesh import telemetry
from canaryctl.providers.metrics import MetricsAnalyzer

ENVOY_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
NAMESPACE = "test"
CANARY_POD = "podinfo-7d4b8c9f6-k2l3m"
PRIMARY_POD = "podinfo-primary-5c4b8d7f9-x2x4z"
PRIMARY_CLUSTER, CANARY_CLUSTER = f"podinfo-primary.{NAMESPACE}", f"podinfo-canary.{NAMESPACE}"


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def app(delay: float, fail_every: int) -> ThreadingHTTPServer:
    """A workload: sleeps ``delay``, answers 500 to every ``fail_every``-th request (0: never)."""
    registry = CollectorRegistry()
    duration = Histogram(
        "http_request_duration_seconds", "Request duration", ["method", "path", "status"], registry=registry
    )
    for status in ("200", "500"):
        duration.labels("GET", "/", status)  # series exist (at 0) before traffic, as in a running pod
    counter = itertools.count(1)
    lock = threading.Lock()

    class Handler(Quiet):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self.answer(200, generate_latest(registry))
                return
            start = time.perf_counter()
            with lock:
                n = next(counter)
            time.sleep(delay)
            status = 500 if fail_every and n % fail_every == 0 else 200
            duration.labels("GET", "/", str(status)).observe(time.perf_counter() - start)
            self.answer(status, b"ok" if status == 200 else b"boom")

    return serve(Handler)


@dataclass
class EnvoyStats:
    """Envoy-named counters and millisecond histograms, rendered like /stats/prometheus."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, name: str, labels: dict[str, str], by: float = 1) -> None:
        with self.lock:
            key = (name, tuple(labels.items()))
            self.counters[key] = self.counters.get(key, 0) + by

    def observe(self, name: str, labels: dict[str, str], ms: float | None) -> None:
        with self.lock:
            samples = self.histograms.setdefault((name, tuple(labels.items())), [])
            if ms is not None:
                samples.append(ms)

    def render(self) -> bytes:
        lines: list[str] = []
        with self.lock:
            for (name, labels), value in sorted(self.counters.items()):
                lines.append(f"{name}{{{_labels(labels)}}} {value}")
            for (name, labels), samples in sorted(self.histograms.items()):
                for le in ENVOY_BUCKETS_MS:
                    count = sum(1 for s in samples if s <= le)
                    lines.append(f'{name}_bucket{{{_labels(labels)},le="{le}"}} {count}')
                lines.append(f'{name}_bucket{{{_labels(labels)},le="+Inf"}} {len(samples)}')
                lines.append(f"{name}_sum{{{_labels(labels)}}} {sum(samples)}")
                lines.append(f"{name}_count{{{_labels(labels)}}} {len(samples)}")
        return ("\n".join(lines) + "\n").encode()


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels)


def mesh_proxy(backends: dict[str, int], abort_every: dict[str, int]) -> ThreadingHTTPServer:
    """Alternates requests over ``backends`` (cluster name -> port) and records Envoy-style stats."""
    stats = EnvoyStats()
    upstream = telemetry.UPSTREAM_RQ_TOTAL
    upstream_time = telemetry.UPSTREAM_RQ_TIME_BUCKET.removesuffix("_bucket")
    caller = telemetry.CALLER_RQ_TOTAL
    caller_time = telemetry.CALLER_RQ_DURATION_BUCKET.removesuffix("_bucket")
    code = telemetry.RESPONSE_CODE_LABEL
    for cluster in backends:
        by_cluster = {telemetry.CLUSTER_LABEL: cluster}
        by_backend = {telemetry.SERVICE_LABEL: "podinfo", telemetry.BACKEND_LABEL: cluster}
        for status in ("200", "500", "503"):
            stats.inc(upstream, {**by_cluster, code: status}, 0)
            stats.inc(caller, {**by_backend, code: status}, 0)
        stats.observe(upstream_time, by_cluster, None)
        stats.observe(caller_time, by_backend, None)
    order = itertools.cycle(sorted(backends))
    seen = {name: itertools.count(1) for name in backends}
    lock = threading.Lock()

    class Handler(Quiet):
        def do_GET(self) -> None:
            if self.path == "/stats/prometheus":
                self.answer(200, stats.render())
                return
            start = time.perf_counter()
            with lock:
                cluster = next(order)
                n = next(seen[cluster])
            by_backend = {telemetry.SERVICE_LABEL: "podinfo", telemetry.BACKEND_LABEL: cluster}
            if abort_every.get(cluster) and n % abort_every[cluster] == 0:
                status, body = 503, b"fault filter abort"
            else:
                connection = http.client.HTTPConnection("127.0.0.1", backends[cluster], timeout=5)
                connection.request("GET", "/")
                response = connection.getresponse()
                status, body = response.status, response.read()
                connection.close()
                labels = {telemetry.CLUSTER_LABEL: cluster}
                stats.inc(upstream, {**labels, code: str(status)})
                stats.observe(upstream_time, labels, (time.perf_counter() - start) * 1000)
            stats.inc(caller, {**by_backend, code: str(status)})
            stats.observe(caller_time, by_backend, (time.perf_counter() - start) * 1000)
            self.answer(status, body)

    return serve(Handler)


@dataclass
class Scenario:
    prometheus: Any
    analyzer: MetricsAnalyzer

    def canary(self, provider: str | None) -> Canary:
        return Canary.model_validate(
            {
                "metadata": {"name": "podinfo", "namespace": NAMESPACE},
                "spec": {
                    "provider": provider,
                    "metricsServer": self.prometheus.url,
                    "targetRef": {"kind": "Deployment", "name": "podinfo"},
                    "service": {"port": 9898},
                },
            }
        )

    def measure(self, provider: str | None, name: str, caller_side: bool = False) -> Any:
        metric = CanaryMetric.model_validate({"name": name, "interval": "1m", "compare": {"maxDelta": 1}})
        return asyncio.run(self.analyzer.measure(self.canary(provider), metric, caller_side))


@pytest.fixture
def scenario(start_prometheus: Callable[[list[dict[str, Any]]], Any]) -> Iterator[Scenario]:
    primary, canary = app(delay=0.0, fail_every=0), app(delay=0.06, fail_every=5)
    ports = {PRIMARY_CLUSTER: primary.server_address[1], CANARY_CLUSTER: canary.server_address[1]}
    proxy = mesh_proxy(ports, abort_every={CANARY_CLUSTER: 10})
    servers = [primary, canary, proxy]
    try:
        pods = [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {"kubernetes_namespace": NAMESPACE, "kubernetes_pod_name": pod},
            }
            for port, pod in ((ports[PRIMARY_CLUSTER], PRIMARY_POD), (ports[CANARY_CLUSTER], CANARY_POD))
        ]
        prometheus = start_prometheus(
            [
                {"job_name": "pods", "static_configs": pods},
                {
                    "job_name": "envoy",
                    "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{proxy.server_address[1]}"]}],
                },
            ]
        )
        prometheus.wait_for("count(up == 1)", 3)  # every target scraped once, at zero, before traffic
        with httpx.Client(trust_env=False, timeout=5) as client, ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: client.get(f"http://127.0.0.1:{proxy.server_address[1]}/").status_code,
                    range(200),
                )
            )
        assert (statuses.count(200), statuses.count(500), statuses.count(503)) == (172, 18, 10)
        prometheus.wait_for(f"sum({telemetry.CALLER_RQ_TOTAL})", 200)
        prometheus.wait_for("sum(http_request_duration_seconds_count)", 190)
        yield Scenario(prometheus, MetricsAnalyzer())
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_builtin_queries_measure_real_traffic(scenario: Scenario) -> None:
    # Included mesh, upstream stats: the proxy's aborts never reached the canary.
    rate = scenario.measure(None, "request-success-rate")
    assert rate.error is None, rate.error
    assert rate.canary.value == pytest.approx(80.0, abs=0.01)
    assert rate.primary.value == pytest.approx(100.0)
    assert rate.canary.errors / rate.canary.requests == pytest.approx(0.2)
    # increase() extrapolates to the window's end; with Prometheus seconds old (few samples) that can
    # add up to the better part of the sampled interval, hence the generous upper bounds.
    assert 90 <= rate.canary.requests <= 90 * 2
    assert rate.primary.errors == 0 and 100 <= rate.primary.requests <= 100 * 2

    # Caller side (a fault step): the 10 aborted requests count as errors.
    caller = scenario.measure(None, "request-success-rate", caller_side=True)
    assert caller.canary.value == pytest.approx(72.0, abs=0.01)
    assert caller.canary.errors / caller.canary.requests == pytest.approx(0.28)
    assert caller.primary.value == pytest.approx(100.0)

    # The canary sleeps 60 ms: its p99 lands in Envoy's (50, 100] ms bucket, one bucket up under CPU load.
    duration = scenario.measure(None, "request-duration")
    assert 50 <= duration.canary.value <= 250
    assert duration.primary.value <= 50  # fast; under CPU load a few requests reach 10-25 ms
    assert duration.query and f'envoy_cluster_name="{CANARY_CLUSTER}"' in duration.query

    # Kubernetes (pod-level http_request_duration_seconds, Flagger's query): canary pods saw 90 requests.
    pods = scenario.measure("kubernetes", "request-success-rate")
    assert pods.error is None, pods.error
    assert pods.canary.value == pytest.approx(80.0, abs=0.01)
    assert pods.primary.value == pytest.approx(100.0)
    pod_duration = scenario.measure("kubernetes", "request-duration")
    assert 50 <= pod_duration.canary.value <= 250
    assert pod_duration.primary.value <= 50

    sample = asyncio.run(scenario.analyzer.error_sample(scenario.canary(None), 60))
    assert sample is not None and sample.errors / sample.requests == pytest.approx(0.2)


def test_stopped_prometheus_reports_an_error_never_a_value(
    start_prometheus: Callable[[list[dict[str, Any]]], Any],
) -> None:
    scenario = Scenario(start_prometheus([]), MetricsAnalyzer())
    canary = scenario.canary(None)
    canary.spec.analysis = canary.spec.effective_analysis.model_copy(
        update={"metrics": [CanaryMetric(name="request-duration")]}
    )
    assert asyncio.run(scenario.analyzer.availability(canary)) == []
    scenario.prometheus.stop()
    observation = scenario.measure(None, "request-success-rate")
    assert observation.canary.value is None and observation.primary is None
    assert observation.error and "Prometheus" in observation.error
    assert asyncio.run(scenario.analyzer.error_sample(canary, 10)) is None
    assert asyncio.run(scenario.analyzer.availability(canary)) == [
        "metric request-duration: prometheus provider is not available"
    ]
