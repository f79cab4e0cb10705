"""The builtin queries of the ingress routers (Flagger's nginx, contour, gloo, skipper, traefik and
apisix observers) and of Knative (per revision, the activator's and queue-proxies' Envoy) against a REAL
Prometheus scraping the metric names and labels each proxy exports.

A local exporter serves counters that grow at fixed rates since it started: the canary's series (9 of
10 requests succeed, 50 ms each) beside series the query must leave out (the primary failing every
request, another namespace, another ingress). Every series comes from one scrape, so rate() sees the
same sample times for all and the ratios come out exact.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from canaryctl.api.models import Canary
from canaryctl.local.prometheus import LocalPrometheus
from canaryctl_providers.metrics.builtin import mesh_queries
from canaryctl_providers.metrics.template import TemplateModel, render

NS = "test"
INTERVAL = "10s"

# (metric name, labels, per-second increase); ``le`` series are histogram buckets.
Series = list[tuple[str, dict[str, str], float]]


def nginx_series() -> Series:
    requests = "nginx_ingress_controller_requests"
    duration = "nginx_ingress_controller_response_duration_seconds"
    canary = {"namespace": NS, "ingress": "podinfo", "canary": "test-podinfo-canary-9898"}
    primary = {"namespace": NS, "ingress": "podinfo", "canary": ""}
    return [
        (requests, canary | {"status": "200"}, 9),
        (requests, canary | {"status": "503"}, 1),
        (f"{duration}_sum", canary, 10 * 0.05),
        (f"{duration}_count", canary, 10),
        (requests, primary | {"status": "500"}, 50),  # not the canary's
        (f"{duration}_sum", primary, 50 * 2.0),
        (f"{duration}_count", primary, 50),
        (requests, canary | {"ingress": "other", "status": "500"}, 50),
        (requests, canary | {"namespace": "prod", "status": "500"}, 50),
    ]


def envoy_series(canary_cluster: str, primary_cluster: str) -> Series:
    series: Series = []
    for cluster, ok, failed in ((canary_cluster, 9, 1), (primary_cluster, 0, 50)):
        labels = {"envoy_cluster_name": cluster}
        series += [
            ("envoy_cluster_upstream_rq", labels | {"envoy_response_code": "200"}, ok),
            ("envoy_cluster_upstream_rq", labels | {"envoy_response_code": "503"}, failed),
        ]
        # The canary answers within (10, 25] ms, the primary within (1000, +Inf).
        for le in ("5", "10", "25", "1000", "+Inf"):
            fast = cluster == canary_cluster and le not in ("5", "10")
            count = ok + failed if fast or le == "+Inf" else 0
            series.append(("envoy_cluster_upstream_rq_time_bucket", labels | {"le": le}, count))
    return series


def traefik_series() -> Series:
    """Traefik's service histogram: requests are its +Inf bucket, by service and code."""
    series: Series = []
    buckets = "traefik_service_request_duration_seconds_bucket"
    canary, primary = "test-podinfo-canary-9898@kubernetescrd", "test-podinfo-primary-9898@kubernetescrd"
    for service, code, rate in ((canary, "200", 9), (canary, "503", 1), (primary, "500", 50)):
        # The canary answers within (10, 25] ms, the primary within (1, +Inf) s.
        for le in ("0.005", "0.01", "0.025", "1", "+Inf"):
            fast = service == canary and le not in ("0.005", "0.01")
            labels = {"service": service, "code": code, "le": le}
            series.append((buckets, labels, rate if fast or le == "+Inf" else 0))
    return series


def skipper_series() -> Series:
    """Skipper's per-route response histogram (requests: its +Inf bucket) and serve-time summary, by route
    id ``kube_<namespace>__<ingress>__<host>__<path>__<backend>`` with non-word characters made ``_``:
    the canary Ingress's route to the canary, its route to the primary, the user's Ingress's route."""
    canary = "kube_test__podinfo_canary__podinfo_example_com____podinfo_canary"
    primary = "kube_test__podinfo_canary__podinfo_example_com____podinfo_primary"
    user = "kube_test__podinfo__podinfo_example_com____podinfo"
    buckets, serve = "skipper_response_duration_seconds_bucket", "skipper_serve_route_duration_seconds"
    series: Series = []
    for route, code, rate in (
        (canary, "200", 9),
        (canary, "503", 1),
        (primary, "500", 50),
        (user, "500", 50),
    ):
        series.append((buckets, {"route": route, "code": code, "le": "+Inf"}, rate))
    for route, rate, seconds in ((canary, 10, 0.05), (primary, 50, 2.0), (user, 50, 2.0)):
        series += [
            (f"{serve}_sum", {"route": route}, rate * seconds),
            (f"{serve}_count", {"route": route}, rate),
        ]
    return series


def apisix_series() -> Series:
    """APISIX's status counter and latency histogram, by route (``<namespace>_<ApisixRoute>_<route>``)."""
    canary, primary = "test_web-podinfo-canary_app", "test_web_app"  # the copy, and the user's route
    series: Series = [
        ("apisix_http_status", {"route": canary, "code": "200"}, 9),
        ("apisix_http_status", {"route": canary, "code": "503"}, 1),
        ("apisix_http_status", {"route": primary, "code": "500"}, 50),
    ]
    for route, fast in ((canary, True), (primary, False)):
        for kind in ("request", "upstream"):
            for le in ("5", "10", "25", "1000", "+Inf"):
                in_time = fast and kind == "request" and le not in ("5", "10")
                labels = {"route": route, "type": kind, "le": le}
                series.append(("apisix_http_latency_bucket", labels, 10 if in_time or le == "+Inf" else 0))
    return series


PROVIDERS: dict[str, Callable[[], Series]] = {
    "nginx": nginx_series,
    "contour": lambda: envoy_series("test_podinfo-canary_9898", "test_podinfo-primary_9898"),
    "gloo": lambda: envoy_series(
        "test-podinfo-canaryupstream-9898_test", "test-podinfo-primaryupstream-9898_test"
    ),
    "traefik": traefik_series,
    "apisix": apisix_series,
    "skipper": skipper_series,
    # The revision under analysis (the Canary's status names it) against the promoted one.
    "knative": lambda: envoy_series(f"{NS}/podinfo-00002", f"{NS}/podinfo-00001"),
}
# The p99 Prometheus interpolates in the canary's (10, 25] ms bucket; nginx's and skipper's are
# Flagger's averages.
EXPECTED_DURATION_MS = {
    "nginx": 50.0,
    "skipper": 50.0,
    **dict.fromkeys(("contour", "gloo", "traefik", "apisix", "knative"), 10 + 15 * 0.99),
}


class Exporter(ThreadingHTTPServer):
    """Serves every series at ``rate × seconds since start`` in Prometheus's text format."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.started = time.monotonic()
        super().__init__(("127.0.0.1", 0), _Handler)

    def exposition(self) -> str:
        elapsed = time.monotonic() - self.started
        lines = []
        for name, labels, rate in self.series:
            text = ",".join(f'{key}="{value}"' for key, value in labels.items())
            lines.append(f"{name}{{{text}}} {rate * elapsed}")
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: Exporter

    def do_GET(self) -> None:
        body = self.server.exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus_urls() -> Iterator[dict[str, str]]:
    """Every provider's exporter with a Prometheus of its own scraping it alone, all started at once: the
    scrapes a test waits for accumulate for every provider at the same time."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for provider, series in PROVIDERS.items():
            exporter = Exporter(series())
            threading.Thread(target=exporter.serve_forever, daemon=True).start()
            stack.callback(exporter.server_close)
            stack.callback(exporter.shutdown)
            target = f"http://127.0.0.1:{exporter.server_address[1]}/metrics"
            urls[provider] = stack.enter_context(LocalPrometheus.scraping(provider, target)).url
        yield urls


@pytest.fixture(params=sorted(PROVIDERS))
def scraped(request: pytest.FixtureRequest, prometheus_urls: dict[str, str]) -> tuple[str, str]:
    """(provider, URL of the Prometheus scraping that provider's exporter and nothing else)."""
    return request.param, prometheus_urls[request.param]


def query(prometheus: str, promql: str, deadline: float) -> float:
    """The query's value once Prometheus has two scrapes of every series (bounded by ``deadline``)."""
    while True:
        reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
        result = reply["data"]["result"]
        if result and result[0]["value"][1] not in ("NaN",):
            return float(result[0]["value"][1])
        assert time.monotonic() < deadline, f"no data for {promql}: {reply}"
        time.sleep(0.5)


@pytest.mark.slow
def test_ingress_builtin_queries_measure_the_canary_only(scraped: tuple[str, str]) -> None:
    provider, prometheus = scraped
    manifest: dict[str, Any] = {
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "provider": provider,
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
            "routeRef": {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "web"},
            "service": {"port": 9898},
        },
    }
    if provider == "knative":  # a Knative Service's revisions, as the operator records them
        manifest["spec"] = {
            "provider": provider,
            "targetRef": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"},
        }
        manifest["status"] = {"lastAppliedSpec": "podinfo-00002", "lastPromotedSpec": "podinfo-00001"}
    canary = Canary.model_validate(manifest)
    queries = mesh_queries(provider).upstream
    model = queries.model_for(TemplateModel.for_canary(canary, INTERVAL))
    deadline = time.monotonic() + 60
    # Wait for a full interval of samples, so increase() is not extrapolated from a first scrape or two.
    query(prometheus, f"count_over_time(up[{INTERVAL}]) >= 8", deadline)
    assert query(prometheus, render(queries.success_rate, model), deadline) == pytest.approx(90.0)
    duration = query(prometheus, render(queries.duration, model), deadline)
    assert duration == pytest.approx(EXPECTED_DURATION_MS[provider], rel=0.01)
    requests = query(prometheus, render(queries.requests, model), deadline)
    # 10 requests a second over 10s, extrapolated at the window's edges (less so when a loaded machine
    # delays scrapes); the series left out add 50 or more a second each.
    assert 10 * 5 <= requests <= 10 * 15, requests
    if provider == "knative":  # comparative analysis measures the promoted revision, which fails all
        primary = TemplateModel.for_canary(canary, INTERVAL, primary=True)
        assert query(prometheus, render(queries.success_rate, primary), deadline) == 0
