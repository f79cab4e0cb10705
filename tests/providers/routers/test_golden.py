"""The exact objects each router writes, per route state, against reviewed YAML in ``golden/``.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/providers/routers``,
then review the diff against each API's schema before committing: the goldens are the spec.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl_mesh.kinds import resource_path
from canaryctl_providers.routers import ROUTERS
from tests.providers.routers.cases import STATES, InMemoryObjects, make_canary, side_services
from tests.schemas.validation import validate

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = Path(__file__).parents[2] / "schemas"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

ISTIO_GATEWAY_SERVICE: dict[str, Any] = {
    "port": 9898,
    "portDiscovery": True,
    "gateways": ["public-gateway.istio-system.svc.cluster.local"],
    "hosts": ["app.example.com"],
    "match": [{"uri": {"prefix": "/api"}}],
    "rewrite": {"uri": "/"},
    "timeout": "15s",
    "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
    "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}},
    "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["GET"]},
    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
    "apex": {"labels": {"team": "web"}, "annotations": {"owner": "web@example.com"}},
}
GATEWAY_REFS_SERVICE: dict[str, Any] = {
    "port": 9898,
    "hosts": ["app.example.com"],
    "gatewayRefs": [{"name": "public", "namespace": "gateway-system"}],
}
APPMESH_SERVICE: dict[str, Any] = {
    "port": 80,
    "targetPort": 9898,
    "portName": "grpc",
    "hosts": ["app.example.com"],
    "timeout": "15s",
    "retries": {"attempts": 2},
    "match": [{"uri": {"prefix": "/api"}}],
    "backends": ["backend1", "arn:aws:appmesh:eu-west-1:123456789012:mesh/global/virtualService/backend2"],
}

# (golden name, provider, spec.service override or None, route state names)
CASES: list[tuple[str, str, dict[str, Any] | None, tuple[str, ...]]] = [
    ("canaryctl", "canaryctl", None, ("initial", "weights-90-10", "ab", "mirror-30", "fault-weight-10")),
    ("canaryctl", "canaryctl", None, ("fault-ab",)),
    ("smi-v1alpha1", "smi:v1alpha1", None, ("initial", "weights-90-10", "promoted-100")),
    ("smi-v1alpha2", "smi:v1alpha2", None, ("weights-90-10",)),
    ("smi-v1alpha3", "smi:v1alpha3", None, ("weights-90-10", "ab")),
    ("smi-v1alpha4", "smi:v1alpha4", None, ("weights-90-10", "ab")),
    ("linkerd", "linkerd", None, ("weights-90-10", "ab")),
    ("linkerd-smi", "linkerd", None, ("weights-90-10", "ab")),
    ("istio", "istio", None, ("weights-90-10", "ab", "mirror-30", "fault-weight-100", "fault-ab")),
    ("istio-gateway", "istio", ISTIO_GATEWAY_SERVICE, ("weights-90-10", "ab")),
    ("gatewayapi-v1", "gatewayapi:v1", None, ("weights-90-10", "ab", "mirror-30")),
    ("gatewayapi-v1-gateway", "gatewayapi:v1", GATEWAY_REFS_SERVICE, ("weights-90-10",)),
    ("gatewayapi-v1beta1", "gatewayapi:v1beta1", None, ("weights-90-10",)),
    ("kubernetes", "kubernetes", None, ("initial", "promoted-100")),
    ("kuma", "kuma", None, ("initial", "weights-90-10", "ab", "mirror-30")),
    ("kuma-service-match", "kuma", {"port": 9898, "match": [{"uri": {"prefix": "/api"}}]}, ("ab",)),
    ("osm", "osm", None, ("weights-90-10", "promoted-100")),
    ("appmesh-v1beta2", "appmesh:v1beta2", None, ("initial", "weights-90-10", "ab")),
    ("appmesh-v1beta2-gateway", "appmesh:v1beta2", APPMESH_SERVICE, ("weights-90-10",)),
]
PARAMS = [
    pytest.param(name, provider, service, state, id=f"{name}-{state}")
    for name, provider, service, states in CASES
    for state in states
]


def installed(name: str, canary: Any) -> InMemoryObjects:
    """The cluster a case runs against: the side Services, and for ``linkerd-smi`` the linkerd-smi
    extension's TrafficSplit CRD as published."""
    objects = list(side_services(canary))
    if name == "linkerd-smi":
        [crd] = [
            doc
            for doc in yaml.safe_load_all((SCHEMAS / "linkerd-smi-v0.2.7-trafficsplits.yaml").read_text())
            if doc
        ]
        objects.append(crd)
    return InMemoryObjects(*objects)


def render(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)


@pytest.mark.parametrize(("name", "provider", "service", "state"), PARAMS)
def test_router_writes_golden_objects(
    name: str, provider: str, service: dict[str, Any] | None, state: str
) -> None:
    canary = make_canary(service)
    router = ROUTERS[provider](installed(name, canary))
    routes = STATES[state]
    assert router.unsupported(routes) is None
    text = render(asyncio.run(router.desired(canary, routes)))
    path = GOLDEN / f"{name}-{state}.yaml"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden {path.name}; run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def test_every_golden_file_has_a_case() -> None:
    expected = {f"{case.values[0]}-{case.values[3]}.yaml" for case in PARAMS}
    assert {p.name for p in GOLDEN.glob("*.yaml")} == expected


@pytest.mark.parametrize(("name", "provider", "service", "state"), PARAMS)
def test_router_objects_validate_against_their_crds(
    name: str, provider: str, service: dict[str, Any] | None, state: str
) -> None:
    """Every object against the published CRD of each project serving its kind (tests/schemas: SMI's
    TrafficSplit against the SMI spec's, OSM's and Linkerd's), built-in kinds against Kubernetes' OpenAPI."""
    canary = make_canary(service)
    router = ROUTERS[provider](installed(name, canary))
    objects = asyncio.run(router.desired(canary, STATES[state]))
    assert objects
    for obj in objects:
        validate(obj)
        assert resource_path(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"])  # a known kind
