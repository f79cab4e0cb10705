"""What the routers write, read back by the included mesh's real translator into RouteSpecs.

This is the contract between the ``canaryctl`` router and the mesh control plane (no Envoy needed):
weights, header matches, mirror and canary-only faults must survive the round trip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from canaryctl.engine.types import RouteState
from canaryctl_mesh import config
from canaryctl_mesh.translate import cluster_name, translate_namespace
from canaryctl_providers.routers import router_for
from tests.providers.routers.cases import AB_MATCH, FAULT, NS, InMemoryObjects, make_canary

APEX, PRIMARY, CANARY = (cluster_name(name, NS) for name in ("podinfo", "podinfo-primary", "podinfo-canary"))


def _service(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]},
    }


def route_spec(provider: str, routes: RouteState) -> config.RouteSpec:
    """Apply through the router into an in-memory API, then translate everything stored, as the control
    plane would from its watches."""
    objects = InMemoryObjects(
        _service("podinfo", "10.0.0.1"),
        _service("podinfo-primary", "10.0.0.2"),
        _service("podinfo-canary", "10.0.0.3"),
    )
    asyncio.run(router_for(provider, objects).apply(make_canary(), routes))
    [route] = translate_namespace(objects.store.values()).routes
    spec = route.spec
    return spec


def weights(spec: config.RouteSpec) -> dict[str, int]:
    return {wb.backend.name: wb.weight for wb in spec.backends}


def test_weights() -> None:
    spec = route_spec("canaryctl", RouteState(canary_weight=10))
    assert spec.service == APEX
    assert weights(spec) == {PRIMARY: 90, CANARY: 10}
    assert spec.matches == () and spec.mirror is None and spec.faults == {}
    assert spec.timeout == 30.0
    assert spec.retries is not None
    assert (spec.retries.attempts, spec.retries.per_try_timeout, spec.retries.retry_on) == (
        3,
        5.0,
        "gateway-error,reset",
    )


def test_header_route_sends_matches_to_canary_and_the_rest_to_the_apex() -> None:
    spec = route_spec("canaryctl", RouteState(match=AB_MATCH))
    assert weights(spec) == {PRIMARY: 0, CANARY: 0, APEX: 100}
    assert [(m.backend, m.headers) for m in spec.matches] == [
        (CANARY, (config.HeaderMatch(name="x-canary", regex="^insider$"),)),
        (CANARY, (config.HeaderMatch(name="cookie", regex="^(.*?;)?(canary=always)(;.*)?$"),)),
    ]


def test_mirror_percentage_to_canary() -> None:
    spec = route_spec("canaryctl", RouteState(mirror_weight=30))
    assert weights(spec) == {PRIMARY: 100, CANARY: 0}
    assert spec.mirror == config.Mirror(backend=CANARY, percentage=30)


def test_fault_hits_the_canary_backend_only() -> None:
    spec = route_spec("canaryctl", RouteState(canary_weight=10, fault=FAULT))
    assert weights(spec) == {PRIMARY: 90, CANARY: 10}
    assert spec.faults == {
        CANARY: config.Fault(
            delay=config.FaultDelay(seconds=5.0, percentage=50),
            abort=config.FaultAbort(status=503, percentage=10),
        )
    }


def test_fault_on_a_header_route() -> None:
    spec = route_spec("canaryctl", RouteState(match=AB_MATCH, fault=FAULT))
    assert {m.backend for m in spec.matches} == {CANARY}
    assert set(spec.faults) == {CANARY}


@pytest.mark.parametrize("provider", ["smi:v1alpha1", "smi:v1alpha2", "smi:v1alpha3", "smi:v1alpha4"])
def test_every_smi_version_keeps_the_weight_ratio(provider: str) -> None:
    found = weights(route_spec(provider, RouteState(canary_weight=10)))
    assert found[PRIMARY] == 9 * found[CANARY] > 0


@pytest.mark.parametrize("provider", ["smi:v1alpha3", "smi:v1alpha4"])
def test_smi_header_routes(provider: str) -> None:
    spec = route_spec(provider, RouteState(match=AB_MATCH))
    assert len(spec.matches) == 2 and weights(spec)[APEX] == 100
