"""meshd's /metrics, scraped from a running `meshd control-plane` (TLS, TokenReview over the emulated API)
that configures a REAL Envoy sidecar, and read by a real Prometheus evaluating the chart's alert and the
mesh control plane dashboard.

The sidecar's Envoy, run with a stricter regex limit than Envoy's default (its runtime's
``re2.max_program_size.error_level``, which meshd checks at the default), rejects (NACKs) a route
meshd accepted: the NACK, the sidecar still rejecting, the TrafficSplit refused for a conflict, the
refused streams and the TokenReviews all have to show, the MeshConfigRejected alert must fire for
that namespace only, and the JSON log must carry Envoy's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import kmock
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.local.prometheus import free_port
from canaryctl_mesh import config
from canaryctl_mesh.injector import INJECT_LABEL, POD_SECURITY_ENFORCE
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.loopback import UpstreamServers
from canaryctl_mesh.meshd.pki import load_or_create_ca
from canaryctl_mesh.process import EnvoyProcess
from tests.chart.conftest import CHART, NAMESPACE, RELEASE
from tests.kube.emulator import emulator_url
from tests.meshd.test_security import SERVER_NAME, RawSidecar, objects_for, split, token_review
from tests.telemetry.controller import Prometheus, prometheus_scraping
from tests.telemetry.test_dashboards import GRAFANA, chart_rules, panels, returns_data, substitute

pytestmark = pytest.mark.asyncio

TEAM, QUIET = "team-a", "team-b"
NODE = f"web-1.{TEAM}"
BETA_USERS = "beta-[0-9]{8}"
"""An RE2 program of 17 instructions: within Envoy's default limit (100), so meshd sends it on, and
over the sidecar's `STRICT_REGEX_LIMIT`."""
STRICT_REGEX_LIMIT = 10
MESH_SERVICE = f"{RELEASE}-mesh"


def bad_route(team: str) -> list[dict[str, Any]]:
    """A split of its own service "shop" whose match Envoy rejects."""
    group = {
        "apiVersion": "specs.smi-spec.io/v1alpha4",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "beta-users", "namespace": team},
        "spec": {"matches": [{"name": "beta", "headers": [{"x-user": BETA_USERS}]}]},
    }
    shop = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "namespace": team},
        "spec": {"clusterIP": "10.96.1.9", "ports": [{"name": "http", "port": 80}]},
    }
    matched = split(team, "shop", (0, 100))
    matched["spec"] |= {"service": "shop", "matches": [{"kind": "HTTPRouteGroup", "name": "beta-users"}]}
    return [group, shop, matched]


@pytest.fixture
def upstreams() -> Any:
    with UpstreamServers(
        [f"{team}-{side}" for team in (TEAM, QUIET) for side in ("primary", "canary")]
    ) as up:
        yield up


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


async def scrape_until(url: str, ready: Any, child: Any, timeout: float = 60.0) -> dict[Any, float]:
    """Scrape until `ready(samples)` holds."""
    deadline = time.monotonic() + timeout
    found: dict[Any, float] = {}
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        while time.monotonic() < deadline:
            assert child.proc.returncode is None, child.log.read_text()
            try:
                response = await http.get(url)
                found = samples(response.text)
                if ready(found):
                    return found
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"never ready within {timeout}s: {sorted(k for k in found if 'mesh' in k[0])}")


async def raw_stream(port: int, ca_pem: bytes, token: str | None) -> grpc.StatusCode:
    """A stream without a token (or a forged one): the code the server's refusal ends it with."""
    sidecar = RawSidecar(port, ca_pem, token, NODE)
    try:
        return await sidecar.refused()
    finally:
        await sidecar.close()


def review(namespace: str) -> dict[str, Any]:
    pod = {"metadata": {"name": "web-1", "namespace": namespace}, "spec": {"containers": [{"name": "web"}]}}
    request = {"uid": namespace, "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": namespace}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request | {"object": pod},
    }


async def admissions(injector: Any, port: int, ca_pem: bytes) -> dict[Any, float]:
    """One review of each outcome; the injector's metrics once it counted them."""
    url = f"https://127.0.0.1:{port}/mutate"
    trusted = ssl.create_default_context(cadata=ca_pem.decode())
    async with httpx.AsyncClient(verify=trusted, trust_env=False, timeout=10) as http:
        deadline = time.monotonic() + 30
        while True:
            assert injector.proc.returncode is None and time.monotonic() < deadline, injector.log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if (await http.post(url, json=review(TEAM))).status_code == 200:
                    break  # injected
            await asyncio.sleep(0.2)
        await http.post(url, json=review("default"))  # skipped: not a meshed namespace
        await http.post(url, json=review(QUIET))  # refused: its Pod Security level forbids NET_ADMIN
        assert (await http.post(url, content=b"not json")).status_code == 400  # invalid
    return await scrape_until(
        injector.metrics_url,
        lambda s: value(s, "canaryctl_mesh_injector_admissions_total") == 4,
        injector,
    )


@pytest.mark.slow
async def test_meshd_metrics_alert_and_dashboard_on_a_real_envoy_nack(
    emulator: kmock.KubernetesEmulator,
    objects: KubeObjects,
    upstreams: UpstreamServers,
    meshd: Any,
    tmp_path: Path,
) -> None:
    def answer(request: Any) -> dict[str, Any]:
        for key in [k for k in emulator.objects if "tokenreviews" in str(k[0])]:
            del emulator.objects[key]  # kube-apiserver never stores TokenReviews; kmock 0.8 does
        return token_review(request)

    emulator["post /apis/authentication.k8s.io/v1/tokenreviews"] << answer
    ca = await load_or_create_ca(objects, NAMESPACE, f"{RELEASE}-mesh-ca")
    for namespace, labels in ((TEAM, {}), (QUIET, {POD_SECURITY_ENFORCE: "restricted"})):
        metadata = {"name": namespace, "labels": {INJECT_LABEL: "enabled", **labels}}
        await objects.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    for obj in objects_for(TEAM, upstreams, 1, (100, 0)) + objects_for(QUIET, upstreams, 2, (100, 0)):
        await objects.apply(obj)
    await objects.apply(split(TEAM, "pay-hijack", (0, 100)))  # refused: "pay" is routed by an older split
    xds, webhook = free_port(), free_port()
    ca_flags = ["--ca-secret", f"{RELEASE}-mesh-ca", "--ca-namespace", NAMESPACE]
    plane = await meshd(
        "control-plane", "--xds-port", str(xds), "--xds-dns-name", SERVER_NAME, *ca_flags,
        "--namespace", TEAM, "--namespace", QUIET, "--server", emulator_url(emulator), "--log-format", "json",
    )  # fmt: skip
    injector = await meshd(
        "injector", "--port", str(webhook), "--tls-dns-name", "127.0.0.1", *ca_flags,
        "--sidecar-image", "envoy:test", "--init-image", "init:test", "--server", emulator_url(emulator),
    )  # fmt: skip
    token = tmp_path / "token"
    token.write_text(f"token-{TEAM}")
    auth = config.XdsAuth(ca.cert_pem.decode(), str(token), SERVER_NAME)
    bootstrap = config.ads_bootstrap(NODE, "127.0.0.1", xds, admin_port=0, auth=auth)
    bootstrap["layered_runtime"] = {
        "layers": [
            {"name": "strict", "static_layer": {"re2.max_program_size.error_level": STRICT_REGEX_LIMIT}}
        ]
    }
    envoy = EnvoyProcess(bootstrap)
    # As the chart's ServiceMonitor scrapes meshd: job = the Service, the series' namespace label (the
    # sidecars') over the target's (the release's).
    jobs = [
        {
            "job_name": job,
            "honor_labels": True,
            "static_configs": [
                {"targets": [child.metrics_url.split("/")[2]], "labels": {"namespace": NAMESPACE}}
            ],
        }
        for job, child in ((MESH_SERVICE, plane), (f"{RELEASE}-injector", injector))
    ]
    try:
        with prometheus_scraping({}, [chart_rules(tmp_path)], jobs) as prometheus:
            start = time.time()
            await envoy.start()
            healthy = await scrape_until(
                plane.metrics_url,
                lambda s: (
                    value(s, "canaryctl_mesh_xds_connected_sidecars", namespace=TEAM) == 1
                    and value(s, "canaryctl_mesh_xds_acks_total", type="VirtualHost") >= 1
                ),
                plane,
            )
            assert value(healthy, "canaryctl_mesh_xds_nacks_total") == 0
            assert value(healthy, "canaryctl_mesh_xds_streams", namespace=TEAM) == 1
            assert value(healthy, "canaryctl_mesh_token_reviews_total", result="authenticated") == 1
            # Prometheus has seen the mesh healthy before anything is rejected.
            await asyncio.to_thread(
                prometheus.until, f'canaryctl_mesh_xds_rejecting_sidecars{{namespace="{TEAM}"}}'
            )
            assert not await asyncio.to_thread(prometheus.query, 'ALERTS{alertname="MeshConfigRejected"}')

            # Refused (test_security.py checks the status codes; the counts below are the server's).
            for bearer in (None, "forged"):
                await raw_stream(xds, ca.cert_pem, bearer)
            for obj in bad_route(TEAM):
                await objects.apply(obj)
            rejected = await scrape_until(
                plane.metrics_url,
                lambda s: value(s, "canaryctl_mesh_xds_rejecting_sidecars", namespace=TEAM) == 1,
                plane,
            )
            assert value(rejected, "canaryctl_mesh_xds_nacks_total", type="VirtualHost", namespace=TEAM) >= 1
            assert value(rejected, "canaryctl_mesh_xds_nacks_total", namespace=QUIET) == 0
            assert value(rejected, "canaryctl_mesh_refused_objects", kind="TrafficSplit", namespace=TEAM) == 1
            assert value(rejected, "canaryctl_mesh_xds_refused_streams_total", reason="unauthenticated") == 2
            assert value(rejected, "canaryctl_mesh_token_reviews_total", result="unauthenticated") == 1
            pushes = value(rejected, "canaryctl_mesh_xds_push_duration_seconds_count", type="VirtualHost")
            buckets = sorted(
                (float(dict(labels)["le"]), count)
                for (name, labels), count in rejected.items()
                if name == "canaryctl_mesh_xds_push_duration_seconds_bucket"
                and ("type", "VirtualHost") in labels
            )
            assert pushes >= 2 and buckets[-1] == (float("inf"), pushes)  # the ACK and the NACK at least
            assert [count for _, count in buckets] == sorted(count for _, count in buckets)  # cumulative
            assert value(rejected, "canaryctl_mesh_sync_duration_seconds_count") >= 1
            assert value(rejected, "canaryctl_mesh_watch_restarts_total", kind="TrafficSplit") == 0
            expiry = value(rejected, "canaryctl_mesh_certificate_expiry_timestamp_seconds", certificate="ca")
            assert expiry == ca.pair.not_after.timestamp()
            xds_expiry = value(
                rejected, "canaryctl_mesh_certificate_expiry_timestamp_seconds", certificate="xds"
            )
            assert time.time() < xds_expiry <= expiry
            # Envoy's own stats agree: it rejected a route update.
            stats = (await envoy.get("/stats?filter=update_rejected")).text
            assert any(line.endswith(": 1") for line in stats.splitlines()), stats

            admitted = await admissions(injector, webhook, ca.cert_pem)
            for outcome in ("injected", "skipped", "refused", "invalid"):
                assert value(admitted, "canaryctl_mesh_injector_admissions_total", outcome=outcome) == 1, (
                    outcome
                )
            served = value(
                admitted, "canaryctl_mesh_certificate_expiry_timestamp_seconds", certificate="injector"
            )
            assert time.time() < served <= expiry

            alerts = await asyncio.to_thread(prometheus.until, 'ALERTS{alertname="MeshConfigRejected"}')
            assert {a["metric"]["namespace"] for a in alerts} == {TEAM}
            await asyncio.sleep(3)  # a few more scrapes for the rate() panels
            await asyncio.to_thread(check_dashboard, prometheus, start, time.time())
    finally:
        await envoy.stop()
    assert await plane.terminate() == 0, plane.log.read_text()
    # A log pipeline gets Envoy's reason as JSON, with the controller's keys.
    lines = [json.loads(line) for line in plane.log.read_text().splitlines() if line.startswith("{")]
    (nack,) = [line for line in lines if f"node {NODE} rejected" in line["message"]]
    assert nack["level"] == "WARNING" and nack["logger"] == "canaryctl_mesh.ads" and "time" in nack
    assert f"RE2 program size of 17 > max program size of {STRICT_REGEX_LIMIT}" in nack["message"], nack


def check_dashboard(prometheus: Prometheus, start: float, end: float) -> None:
    dashboard = json.loads((CHART / "dashboards" / "meshd.json").read_text())
    variables = {"$datasource": "prometheus", "$namespace": f"{TEAM}|{QUIET}", **GRAFANA}
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    query = substitute(variable["query"]["query"], variables)
    assert query.startswith("label_values(") and query.endswith(", namespace)"), query
    listed = prometheus.api(
        "label/namespace/values", **{"match[]": query[len("label_values(") : -len(", namespace)")]}
    )
    assert set(listed) == {TEAM}, listed  # the namespaces with a connected sidecar
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = substitute(target["expr"], variables)
            assert returns_data(prometheus, expr, start, end), f"{panel['title']!r}: {expr}"
