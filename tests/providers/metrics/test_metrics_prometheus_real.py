"""The builtin queries against a REAL Prometheus scraping the REAL mesh and real apps under real traffic.

A LocalMesh (one Envoy) splits 50/50 between two app servers, its backends named as the local runtime
names a Canary ``podinfo``'s sides in namespace ``test`` (canaryctl.local.router.backend_name), and aborts
10 % of the canary's share with 503 (a fault step). The primary is fast and healthy; the canary sleeps
60 ms and answers every 5th request with 500. Both export prometheus-client's
``http_request_duration_seconds`` (Flagger's pod-level metric) and OSM's per-destination
``osm_request_total`` / ``osm_request_duration_ms`` (what OSM's Envoy stats extension exports, with its
labels), and log every status they answer. Prometheus labels the Envoy's stats of each backend's cluster
as the platforms label a sidecar's stats: with the Kuma service (``<service>_<namespace>_svc_<port>``) and
with the pod (for App Mesh), as if each pod's sidecar had counted its requests. Pods are labelled under
both schemes the builtin queries read: the canary's as Flagger's relabelling does
(``kubernetes_namespace``, ``kubernetes_pod_name``), the primary's as Prometheus Operator's PodMonitor
does (``namespace``, ``pod``), so each side's value proves one scheme.

Split and fault are random, so the expected values are not constants: they come from what the apps logged
and what the client received. Traffic runs in two rounds of 400. Envoy creates a stat on its first use, so
the first round creates every series before Prometheus starts; Prometheus's first samples are then the
first round's totals, and the second round is what the queries measure. Every series of one target then
has the same sample times and a first sample comparable to its increase, so rate() extrapolates them all
by the same factor and success rates come out exact; ``increase()`` counts lie between the truth and the
truth times `extrapolation_bound`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from canaryctl.api.models import Canary, CanaryMetric
from canaryctl.local.prometheus import LocalPrometheus
from canaryctl.local.router import backend_name
from canaryctl_mesh import config, telemetry
from canaryctl_mesh.local import LocalMesh
from canaryctl_providers.metrics import MetricsAnalyzer

NAMESPACE = "test"
CANARY_POD = "podinfo-7d4b8c9f6-k2l3m"
PRIMARY_POD = "podinfo-primary-5c4b8d7f9-x2x4z"
ROUND = 400
ABORT_BODY = "fault filter abort"


def canary_resource(metrics_server: str = "", provider: str | None = None) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": NAMESPACE},
            "spec": {
                "provider": provider,
                "metricsServer": metrics_server,
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
            },
        }
    )


PRIMARY_BACKEND = backend_name(canary_resource(), primary=True)
CANARY_BACKEND = backend_name(canary_resource(), primary=False)


MAX_PLAUSIBLE_P99_MS = 2000.0


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections when a loaded CPU accepts late


@dataclass
class App:
    """A workload on 127.0.0.1: sleeps `delay`, answers 500 to every `fail_every`-th request (0: never)."""

    name: str
    deployment: str
    delay: float
    fail_every: int
    statuses: list[int] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> App:
        registry = CollectorRegistry()
        duration = Histogram(
            "http_request_duration_seconds",
            "Request duration",
            ["method", "path", "status"],
            registry=registry,
        )
        destination = {"destination_namespace": NAMESPACE, "destination_kind": "Deployment"}
        destination["destination_name"] = self.deployment
        osm_requests = PromCounter(
            "osm_request", "OSM requests", [*destination, "response_code"], registry=registry
        )
        osm_duration = Histogram(
            "osm_request_duration_ms",
            "OSM request duration",
            list(destination),
            registry=registry,
            buckets=(1, 5, 10, 25, 50, 75, 100, 250, 500, 1000, 2500, 5000),
        )
        for status in ("200", "500"):
            duration.labels("GET", "/", status)  # series exist (at 0) before traffic, as in a running pod
            osm_requests.labels(**destination, response_code=status)
        osm_duration.labels(**destination)
        counter = itertools.count(1)
        lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, like a real app behind a proxy: Envoy reuses its upstream connections instead
            # of opening one per request (which, under CPU load, overflowed the listen backlog and
            # turned into an Envoy-generated 503 that no app had answered).
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet: the app keeps its own log in `statuses`."""

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self.answer(200, generate_latest(registry))
                    return
                start = time.perf_counter()
                with lock:
                    n = next(counter)
                time.sleep(app.delay)
                status = 500 if app.fail_every and n % app.fail_every == 0 else 200
                elapsed = time.perf_counter() - start
                duration.labels("GET", "/", str(status)).observe(elapsed)
                osm_requests.labels(**destination, response_code=str(status)).inc()
                osm_duration.labels(**destination).observe(elapsed * 1000)
                with lock:
                    app.statuses.append(status)
                self.answer(status, app.name.encode())

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def query(prometheus: LocalPrometheus, promql: str) -> float | None:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=2.0).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(prometheus: LocalPrometheus, expected: dict[str, float], timeout: float = 10.0) -> None:
    """Until every query returns its expected value (a scrape has seen it), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(query(prometheus, promql) == value for promql, value in expected.items()):
            return
        time.sleep(0.2)
    seen = {promql: query(prometheus, promql) for promql in expected}
    raise AssertionError(f"Prometheus never reached {expected}: {seen}")


def send(url: str, requests: int) -> list[tuple[int, str]]:
    """`requests` GETs from 8 threads; (status, body) of each."""
    with httpx.Client(trust_env=False, timeout=5) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(requests)))
    return [(r.status_code, r.text) for r in responses]


@dataclass
class Truth:
    """The measured round as the apps logged it and the client received it."""

    primary: Counter[int]
    canary: Counter[int]
    aborted: int

    @property
    def canary_answered(self) -> int:
        return self.canary.total()

    def canary_success_rate(self, caller_side: bool) -> float:
        return 100 * self.canary[200] / (self.canary_answered + (self.aborted if caller_side else 0))


@dataclass
class Scenario:
    prometheus: LocalPrometheus
    analyzer: MetricsAnalyzer
    truth: Truth | None = None

    def canary(self, provider: str | None) -> Canary:
        return canary_resource(self.prometheus.url, provider)

    def measure(self, provider: str | None, name: str, caller_side: bool = False) -> Any:
        metric = CanaryMetric.model_validate({"name": name, "interval": "1m", "compare": {"maxDelta": 1}})
        return asyncio.run(self.analyzer.measure(self.canary(provider), metric, caller_side))

    def extrapolation_bound(self) -> float:
        """rate()/increase() extrapolate by at most 1.1 sample intervals at each end of the sampled span."""
        samples = query(self.prometheus, 'count_over_time(up{job="envoy"}[1m])')
        assert samples is not None and samples > 2
        return 1 + 2.2 / (samples - 1)


def totals(apps: list[App], received: int) -> dict[str, float]:
    """What Prometheus must show once it scraped everything so far (histograms included)."""
    answered = sum(len(app.statuses) for app in apps)
    return {
        f"sum({telemetry.CALLER_RQ_TOTAL})": received,
        f"sum({telemetry.CALLER_RQ_DURATION_COUNT})": received,
        f"sum({telemetry.UPSTREAM_RQ_TOTAL})": answered,
        f"sum({telemetry.UPSTREAM_RQ_TIME_COUNT})": answered,
        "sum(http_request_duration_seconds_count)": answered,
    }


def pod_labels(pod: str) -> dict[str, str]:
    """The primary's pod as Prometheus Operator labels it, the canary's as Flagger's relabelling does."""
    if pod == PRIMARY_POD:
        return {"namespace": NAMESPACE, "pod": pod}
    return {"kubernetes_namespace": NAMESPACE, "kubernetes_pod_name": pod}


@pytest.fixture
def scenario(start_prometheus: Callable[[list[dict[str, Any]]], LocalPrometheus]) -> Iterator[Scenario]:
    primary, canary = (
        App("primary", "podinfo-primary", 0.0, 0).start(),
        App("canary", "podinfo", 0.06, 5).start(),
    )
    mesh = LocalMesh()
    try:
        asyncio.run(mesh.start())
        backends = (
            config.WeightedBackend(
                backend=config.Backend(name=name, address="127.0.0.1", port=app.port), weight=50
            )
            for name, app in ((PRIMARY_BACKEND, primary), (CANARY_BACKEND, canary))
        )
        abort = config.Fault(abort=config.FaultAbort(status=503, percentage=10))
        spec = config.RouteSpec(service="podinfo", backends=tuple(backends), faults={CANARY_BACKEND: abort})
        asyncio.run(mesh.apply(spec))

        send(mesh.listen_url, ROUND)  # creates every Envoy series before Prometheus first looks
        pods = [
            {"targets": [f"127.0.0.1:{app.port}"], "labels": pod_labels(pod)}
            for app, pod in ((primary, PRIMARY_POD), (canary, CANARY_POD))
        ]
        envoy_target = mesh.envoy.admin_url.removeprefix("http://")
        prometheus = start_prometheus(
            [
                {"job_name": "pods", "static_configs": pods},
                {
                    "job_name": "envoy",
                    "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": [envoy_target]}],
                    "metric_relabel_configs": [
                        {
                            "source_labels": ["envoy_cluster_name"],
                            "regex": "(.+)",
                            "target_label": "service",
                            "replacement": "${1}_svc_9898",
                        },
                        *(
                            {
                                "source_labels": ["envoy_cluster_name"],
                                "regex": backend,
                                "target_label": label,
                                "replacement": value,
                            }
                            for backend, pod in ((PRIMARY_BACKEND, PRIMARY_POD), (CANARY_BACKEND, CANARY_POD))
                            for label, value in pod_labels(pod).items()
                        ),
                    ],
                },
            ]
        )
        wait_for(prometheus, totals([primary, canary], ROUND))
        before = len(primary.statuses), len(canary.statuses)

        received = send(mesh.listen_url, ROUND)
        wait_for(prometheus, totals([primary, canary], 2 * ROUND))
        truth = Truth(
            primary=Counter(primary.statuses[before[0] :]),
            canary=Counter(canary.statuses[before[1] :]),
            aborted=sum(1 for status, body in received if status == 503 and body == ABORT_BODY),
        )
        # The client saw exactly what the apps answered, plus the aborts.
        statuses = Counter(status for status, _ in received)
        assert statuses == Counter({200: truth.primary[200] + truth.canary[200], 500: truth.canary[500]}) + (
            Counter({503: truth.aborted})
        )
        assert set(truth.primary) == {200} and truth.aborted > 0 and truth.canary[500] > 0
        yield Scenario(prometheus, MetricsAnalyzer(), truth)
    finally:
        asyncio.run(mesh.stop())
        primary.stop()
        canary.stop()


def test_builtin_queries_measure_real_traffic(scenario: Scenario) -> None:
    truth = scenario.truth
    assert truth is not None
    bound = scenario.extrapolation_bound()

    # Included mesh, upstream stats: the aborted requests never reached the canary.
    rate = scenario.measure(None, "request-success-rate")
    assert rate.error is None, rate.error
    assert rate.canary.value == pytest.approx(truth.canary_success_rate(caller_side=False), abs=0.01)
    assert rate.primary.value == pytest.approx(100.0)
    assert truth.canary_answered <= rate.canary.requests <= truth.canary_answered * bound
    assert rate.primary.errors == 0
    assert truth.primary.total() <= rate.primary.requests <= truth.primary.total() * bound

    # Caller side (a fault step): the aborts count as canary errors.
    caller = scenario.measure(None, "request-success-rate", caller_side=True)
    assert caller.canary.value == pytest.approx(truth.canary_success_rate(caller_side=True), abs=0.01)
    called = truth.canary_answered + truth.aborted
    assert called <= caller.canary.requests <= called * bound
    assert caller.primary.value == pytest.approx(100.0)

    # The canary sleeps 60 ms, so its p99 cannot be below 50 ms; the primary answers at once. Queueing on
    # a loaded CPU adds the same delay to both, so the order holds where absolute bounds would not.
    # The upper bound catches a unit mistake (seconds read as ms, or the reverse), not slowness.
    duration = scenario.measure(None, "request-duration")
    assert 50 <= duration.canary.value <= MAX_PLAUSIBLE_P99_MS
    assert duration.primary.value < duration.canary.value
    assert duration.query and f'envoy_cluster_name="{CANARY_BACKEND}"' in duration.query

    # Kubernetes (pod-level http_request_duration_seconds, Flagger's query): the canary pod's own view,
    # the canary under Flagger's labels, the primary under Prometheus Operator's.
    pods = scenario.measure("kubernetes", "request-success-rate")
    assert pods.error is None, pods.error
    assert pods.canary.value == pytest.approx(truth.canary_success_rate(caller_side=False), abs=0.01)
    assert pods.primary.value == pytest.approx(100.0)
    pod_duration = scenario.measure("kubernetes", "request-duration")
    assert 50 <= pod_duration.canary.value <= MAX_PLAUSIBLE_P99_MS
    assert pod_duration.primary.value < pod_duration.canary.value

    # Kuma, OSM and App Mesh (Flagger's queries): the canary's own answers; the aborts never reached it.
    for provider in ("kuma", "osm", "appmesh:v1beta2"):
        rate = scenario.measure(provider, "request-success-rate")
        assert rate.error is None, (provider, rate.error)
        assert rate.canary.value == pytest.approx(truth.canary_success_rate(caller_side=False), abs=0.01)
        assert rate.primary.value == pytest.approx(100.0)
        assert truth.canary_answered <= rate.canary.requests <= truth.canary_answered * bound
        provider_duration = scenario.measure(provider, "request-duration")
        assert 50 <= provider_duration.canary.value <= MAX_PLAUSIBLE_P99_MS, provider
        assert provider_duration.primary.value < provider_duration.canary.value, provider

    sample = asyncio.run(scenario.analyzer.error_sample(scenario.canary(None), 60))
    assert sample is not None
    assert sample.errors / sample.requests == pytest.approx(truth.canary[500] / truth.canary_answered)


def test_stopped_prometheus_reports_an_error_never_a_value(
    start_prometheus: Callable[[list[dict[str, Any]]], LocalPrometheus],
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
