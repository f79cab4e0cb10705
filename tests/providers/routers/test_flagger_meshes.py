"""Kuma, OSM and App Mesh routers write what Flagger's kuma and osm providers route by, in objects each
project's published CRD accepts (tests/schemas)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from canaryctl.api.lint import lint_sources
from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import UnsupportedRoutes, router_for, unsupported_steps
from tests.providers.routers.cases import AB_MATCH, MESH_SERVICE, NS, InMemoryObjects, make_canary
from tests.schemas.validation import validate


def written(provider: str, canary: Canary, routes: RouteState) -> list[dict[str, Any]]:
    """What the router writes beside the side Services the workloads side made."""
    objects = InMemoryObjects(*SIDE_SERVICES)
    asyncio.run(router_for(provider, objects).apply(canary, routes))
    return [obj for obj in objects.store.values() if obj not in SIDE_SERVICES]


SIDE_SERVICES = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"podinfo{suffix}", "namespace": NS},
        "spec": {"selector": {"app.kubernetes.io/name": f"podinfo{suffix}"}},
    }
    for suffix in ("-primary", "-canary")
]


def split(route: dict[str, Any], rule: int = -1) -> dict[str, int]:
    """kuma.io/service → weight of one MeshHTTPRoute rule."""
    backends = route["spec"]["to"][0]["rules"][rule]["default"]["backendRefs"]
    return {b["name"]: b["weight"] for b in backends}


def test_kuma_splits_the_apex_kuma_service_as_flaggers_traffic_route() -> None:
    """Flagger's TrafficRoute: sources every service, destination ``<apex>_<ns>_svc_<port>``, split
    between ``<apex>-primary_...`` and ``<apex>-canary_...``; the mesh from the kuma.io/mesh annotation."""
    manifest = make_canary().model_dump(by_alias=True, exclude_none=True, mode="json")
    manifest["metadata"]["annotations"] = {"kuma.io/mesh": "payments"}
    canary = Canary.model_validate(manifest)
    [route] = written("kuma", canary, RouteState(canary_weight=30))
    assert validate(route) == ["kuma"]
    assert route["kind"] == "MeshHTTPRoute" and route["metadata"]["name"] == "podinfo"
    assert route["metadata"]["namespace"] == NS
    assert route["metadata"]["labels"]["kuma.io/mesh"] == "payments"
    assert route["spec"]["targetRef"] == {"kind": "Mesh"}  # every client, as Flagger's kuma.io/service: "*"
    assert route["spec"]["to"][0]["targetRef"] == {"kind": "MeshService", "name": f"podinfo_{NS}_svc_9898"}
    assert split(route) == {f"podinfo-primary_{NS}_svc_9898": 70, f"podinfo-canary_{NS}_svc_9898": 30}


def test_kuma_header_route_sends_matching_requests_to_the_canary_only() -> None:
    [route] = written("kuma", make_canary(), RouteState(canary_weight=20, match=AB_MATCH))
    validate(route)
    rules = route["spec"]["to"][0]["rules"]
    assert len(rules) == 2
    assert rules[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "insider"}]
    assert split(route, 0) == {f"podinfo-primary_{NS}_svc_9898": 0, f"podinfo-canary_{NS}_svc_9898": 100}
    assert split(route, 1) == {f"podinfo-primary_{NS}_svc_9898": 80, f"podinfo-canary_{NS}_svc_9898": 20}


def test_osm_writes_flaggers_smi_v1alpha2_traffic_split() -> None:
    """Flagger's osm provider is its SMI v1alpha2 router: integer weights, the apex as root service."""
    [ts] = written("osm", make_canary(), RouteState(canary_weight=10))
    assert validate(ts, "osm") == ["osm"]
    assert ts["apiVersion"] == "split.smi-spec.io/v1alpha2" and ts["kind"] == "TrafficSplit"
    assert ts["spec"]["service"] == "podinfo"
    weights = {b["service"]: b["weight"] for b in ts["spec"]["backends"]}
    assert weights == {"podinfo-primary": 90, "podinfo-canary": 10}


def by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def targets(router: dict[str, Any], route: int = 0) -> dict[str, int]:
    action = router["spec"]["routes"][route]["httpRoute"]["action"]
    return {t["virtualNodeRef"]["name"]: t["weight"] for t in action["weightedTargets"]}


def test_appmesh_writes_flaggers_nodes_routers_and_services() -> None:
    """Flagger's appmesh:v1beta2 objects (pkg/router/appmesh_v1beta2.go and its test): virtual nodes
    per side with DNS discovery and their pods, an apex router with the weighted route, a canary router
    with everything on the canary, a virtual service per router; timeouts in ms."""
    objects = written("appmesh:v1beta2", make_canary(), RouteState(canary_weight=40))
    for obj in objects:
        assert validate(obj) == ["appmesh"]
    found = by_kind_and_name(objects)
    assert set(found) == {
        ("VirtualNode", "podinfo-primary"),
        ("VirtualNode", "podinfo-canary"),
        ("VirtualRouter", "podinfo"),
        ("VirtualRouter", "podinfo-canary"),
        ("VirtualService", "podinfo"),
        ("VirtualService", "podinfo-canary"),
    }
    primary = found["VirtualNode", "podinfo-primary"]["spec"]
    assert primary["serviceDiscovery"]["dns"]["hostname"] == f"podinfo-primary.{NS}.svc.cluster.local."
    assert primary["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "podinfo-primary"}}
    assert primary["listeners"][0]["portMapping"] == {"port": 9898, "protocol": "http"}
    assert primary["listeners"][0]["timeout"]["http"]["perRequest"] == {"unit": "ms", "value": 30000}
    apex = found["VirtualRouter", "podinfo"]
    assert targets(apex) == {"podinfo-canary": 40, "podinfo-primary": 60}
    assert apex["spec"]["routes"][0]["httpRoute"]["match"] == {"prefix": "/"}
    assert targets(found["VirtualRouter", "podinfo-canary"]) == {"podinfo-canary": 100, "podinfo-primary": 0}
    provider = found["VirtualService", "podinfo"]["spec"]["provider"]
    assert provider == {"virtualRouter": {"virtualRouterRef": {"name": "podinfo"}}}


def test_appmesh_header_route_has_priority_over_the_weighted_route() -> None:
    """Flagger's A/B routes: ``<apex>-a`` (priority 10, the header match, to the canary) and
    ``<apex>-b`` (priority 20, the rest)."""
    found = by_kind_and_name(written("appmesh:v1beta2", make_canary(), RouteState(match=AB_MATCH[:1])))
    apex = found["VirtualRouter", "podinfo"]
    a, b = apex["spec"]["routes"]
    assert (a["name"], a["priority"], b["name"], b["priority"]) == ("podinfo-a", 10, "podinfo-b", 20)
    assert a["httpRoute"]["match"]["headers"] == [{"name": "x-canary", "match": {"exact": "insider"}}]
    assert targets(apex, 0) == {"podinfo-canary": 100, "podinfo-primary": 0}
    assert targets(apex, 1) == {"podinfo-canary": 0, "podinfo-primary": 100}


def v1beta1_targets(service: dict[str, Any], route: int = 0) -> dict[str, int]:
    action = service["spec"]["routes"][route]["http"]["action"]
    return {t["virtualNodeName"]: t["weight"] for t in action["weightedTargets"]}


def test_appmesh_v1beta1_writes_flaggers_nodes_and_services_with_embedded_routers() -> None:
    """Flagger's appmesh provider (pkg/router/appmesh.go): three VirtualNodes (the apex resolving to the
    primary) in the named mesh, and VirtualServices ``<apex>.<ns>`` and ``<apex>-canary.<ns>`` carrying
    their router and routes; retries in v1beta1's fields."""
    canary = make_canary(MESH_SERVICE)
    objects = written("appmesh", canary, RouteState(canary_weight=40))
    for obj in objects:
        assert obj["apiVersion"] == "appmesh.k8s.aws/v1beta1"
        assert validate(obj) == ["appmesh-v1beta1"]
    found = by_kind_and_name(objects)
    assert set(found) == {
        ("VirtualNode", "podinfo"),
        ("VirtualNode", "podinfo-primary"),
        ("VirtualNode", "podinfo-canary"),
        ("VirtualService", f"podinfo.{NS}"),
        ("VirtualService", f"podinfo-canary.{NS}"),
    }
    assert found["VirtualNode", "podinfo"]["spec"] == {
        "meshName": "global",
        "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostName": f"podinfo-primary.{NS}"}},
    }
    canary_node = found["VirtualNode", "podinfo-canary"]["spec"]
    assert canary_node["serviceDiscovery"] == {"dns": {"hostName": f"podinfo-canary.{NS}"}}
    apex = found["VirtualService", f"podinfo.{NS}"]["spec"]
    assert apex["meshName"] == "global" and apex["virtualRouter"]["name"] == "podinfo"
    assert v1beta1_targets(found["VirtualService", f"podinfo.{NS}"]) == {
        "podinfo-canary": 40,
        "podinfo-primary": 60,
    }
    assert apex["routes"][0]["http"]["retryPolicy"] == {
        "perRetryTimeoutMillis": 5000,
        "maxRetries": 3,
        "httpRetryEvents": ["gateway-error"],
        "tcpRetryEvents": ["connection-error"],
    }
    side = found["VirtualService", f"podinfo-canary.{NS}"]
    assert side["spec"]["virtualRouter"]["name"] == "podinfo-canary"
    assert v1beta1_targets(side) == {"podinfo-canary": 100, "podinfo-primary": 0}

    ab = by_kind_and_name(written("appmesh", canary, RouteState(match=AB_MATCH[:1])))
    a, b = ab["VirtualService", f"podinfo.{NS}"]["spec"]["routes"]
    assert (a["name"], a["priority"], b["name"], b["priority"]) == ("podinfo-a", 10, "podinfo-b", 20)
    assert a["http"]["match"]["headers"] == [{"name": "x-canary", "match": {"exact": "insider"}}]


def test_appmesh_v1beta1_needs_the_mesh_name_and_its_schema_rejects_a_bad_protocol() -> None:
    with pytest.raises(UnsupportedRoutes, match=r"spec\.service\.meshName: router appmesh needs"):
        written("appmesh", make_canary(), RouteState())
    [node, *_] = written("appmesh", make_canary(MESH_SERVICE), RouteState())
    node["spec"]["listeners"][0]["portMapping"]["protocol"] = "websocket"
    with pytest.raises(AssertionError, match="appmesh-v1beta1's CRD"):
        validate(node)


def test_appmesh_retry_on_names_become_app_mesh_retry_events() -> None:
    """Flagger copies retryOn verbatim, which App Mesh's CRD rejects for Envoy's names."""
    service = {"port": 9898, "retries": {"attempts": 2, "retryOn": "5xx,reset,gateway-error"}}
    found = by_kind_and_name(written("appmesh:v1beta2", make_canary(service), RouteState()))
    router = found["VirtualRouter", "podinfo"]
    validate(router)
    policy = router["spec"]["routes"][0]["httpRoute"]["retryPolicy"]
    assert policy == {
        "maxRetries": 2,
        "perRetryTimeout": {"unit": "ms", "value": 250},
        "httpRetryEvents": ["server-error", "gateway-error"],
        "tcpRetryEvents": ["connection-error"],
    }
    bad = make_canary({"port": 9898, "retries": {"attempts": 2, "retryOn": "retriable-status-codes"}})
    with pytest.raises(ValueError, match="retryOn: App Mesh cannot retry on 'retriable-status-codes'"):
        written("appmesh:v1beta2", bad, RouteState())


FLAGGER_SHAPED = """
apiVersion: canaryctl.dev/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
  annotations: {kuma.io/mesh: default}
spec:
  provider: PROVIDER
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    meshName: global
    apex: {annotations: {9898.service.kuma.io/protocol: http}}
  analysis:
    interval: 15s
    threshold: 15
    maxWeight: 50
    stepWeight: 10
    metrics:
      - {name: request-success-rate, threshold: 99, interval: 1m}
      - {name: request-duration, threshold: 500, interval: 30s}
"""


@pytest.mark.parametrize("provider", ["kuma", "osm", "appmesh", "appmesh:v1beta2"])
def test_flagger_canaries_for_the_provider_lint_clean_and_every_step_routes(provider: str) -> None:
    """Flagger's Kuma/OSM tutorial Canary (only the apiVersion changed) is accepted, and the router can
    express every routing state of its rollout."""
    text = FLAGGER_SHAPED.replace("PROVIDER", provider)
    result = lint_sources([("canary.yaml", text)])
    assert result.errors == [] and result.ok
    canary = Canary.model_validate(yaml.safe_load(text))
    assert unsupported_steps(canary, router_for(provider, InMemoryObjects())) is None
