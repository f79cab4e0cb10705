"""Kuma and OSM routers write what Flagger's kuma and osm providers route by, in objects each
project's published CRD accepts (tests/schemas)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from canaryctl.api.lint import lint_sources
from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import router_for, unsupported_steps
from tests.providers.routers.cases import AB_MATCH, NS, InMemoryObjects, make_canary
from tests.schemas.validation import validate


def written(provider: str, canary: Canary, routes: RouteState) -> list[dict[str, Any]]:
    objects = InMemoryObjects()
    asyncio.run(router_for(provider, objects).apply(canary, routes))
    return list(objects.store.values())


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


@pytest.mark.parametrize("provider", ["kuma", "osm"])
def test_flagger_canaries_for_the_provider_lint_clean_and_every_step_routes(provider: str) -> None:
    """Flagger's Kuma/OSM tutorial Canary (only the apiVersion changed) is accepted, and the router can
    express every routing state of its rollout."""
    text = FLAGGER_SHAPED.replace("PROVIDER", provider)
    result = lint_sources([("canary.yaml", text)])
    assert result.errors == [] and result.ok
    canary = Canary.model_validate(yaml.safe_load(text))
    assert unsupported_steps(canary, router_for(provider, InMemoryObjects())) is None
