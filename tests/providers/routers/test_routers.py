"""Routers writing through ``Objects``, refusing what they cannot express, and the rollout pre-check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl import registry
from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import ROUTERS, UnsupportedRoutes, router_for, unsupported_steps
from tests.providers.routers.cases import (
    AB_MATCH,
    FAULT,
    NS,
    InMemoryObjects,
    canary_for,
    make_canary,
    prerequisites,
)

SCHEMAS = Path(__file__).parents[2] / "schemas"
SPLIT = ("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "podinfo")
GROUP = ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup", NS, "podinfo")
POLICY = ("mesh.canaryctl.dev/v1alpha1", "TrafficPolicy", NS, "podinfo")


def apply(router: Any, canary: Canary, routes: RouteState) -> None:
    asyncio.run(router.apply(canary, routes))


def test_every_built_in_router_is_registered_as_an_entry_point() -> None:
    assert set(ROUTERS) == set(registry.names(registry.ROUTERS))
    for provider in registry.names(registry.ROUTERS):
        assert router_for(provider, InMemoryObjects()).name


def test_provider_names_and_defaults() -> None:
    objects = InMemoryObjects()
    assert router_for(None, objects).name == "canaryctl"
    assert router_for(None, objects, default="istio").name == "istio"
    assert router_for("smi", objects).name == "smi:v1alpha1"
    assert router_for("linkerd", objects).name == "linkerd"
    assert router_for("gatewayapi", objects).name == "gatewayapi:v1"
    with pytest.raises(
        ValueError,
        match=r"provider 'ambassador' is not supported by canaryctl; use one of .*\bcanaryctl, ",
    ):
        router_for("ambassador", objects)


def test_included_mesh_router_creates_then_prunes_the_route_group() -> None:
    objects = InMemoryObjects()
    router = router_for("canaryctl", objects)
    canary = make_canary()

    apply(router, canary, RouteState(match=AB_MATCH))
    assert objects.log == [
        "apply HTTPRouteGroup/podinfo",
        "apply TrafficPolicy/podinfo",
        "apply TrafficSplit/podinfo",
    ]
    assert objects.store[SPLIT]["spec"]["matches"] == [{"kind": "HTTPRouteGroup", "name": "podinfo"}]

    objects.log.clear()
    apply(router, canary, RouteState(canary_weight=10))
    assert objects.log == [  # the policy did not change: not written
        "apply TrafficSplit/podinfo",
        "delete HTTPRouteGroup/podinfo",
    ]
    assert GROUP not in objects.store
    split = objects.store[SPLIT]["spec"]
    assert "matches" not in split  # server-side apply drops the field this manager stopped setting
    assert [b["weight"] for b in split["backends"]] == [90, 10]


# knative writes into the user's own Service (test_knative covers its unchanged state).
@pytest.mark.parametrize("provider", sorted(set(ROUTERS) - {"kubernetes", "knative"}))
def test_an_unchanged_state_writes_nothing_and_drift_is_corrected(provider: str) -> None:
    """The operator re-applies the current routes every tick: that must cost no write unless an object
    was edited or deleted behind canaryctl's back, or the wanted object lost a field."""
    canary = canary_for(provider)
    objects = InMemoryObjects(*prerequisites(provider, canary))
    router = router_for(provider, objects)
    routes = RouteState(canary_weight=0 if provider.startswith(("smi", "linkerd")) else 10)
    read_only = set(objects.store)
    apply(router, canary, routes)
    objects.log.clear()
    apply(router, canary, routes)
    assert objects.log == []

    first, *_, last = [key for key in [*objects.store, *objects.store] if key not in read_only]
    del objects.store[first]
    apply(router, canary, routes)
    assert objects.log == [f"apply {first[1]}/{first[3]}"]

    objects.log.clear()
    objects.store[last]["spec"] = {"edited": "by hand"}
    apply(router, canary, routes)
    assert objects.log == [f"apply {last[1]}/{last[3]}"]


def test_mirror_and_fault_leave_the_policy_when_their_step_ends() -> None:
    objects = InMemoryObjects()
    router = router_for("canaryctl", objects)
    canary = make_canary()
    apply(router, canary, RouteState(canary_weight=10, mirror_weight=30, fault=FAULT))
    spec = objects.store[POLICY]["spec"]
    assert spec["mirror"] == {"backend": "podinfo-canary", "percentage": 30}
    assert spec["faults"][0]["backend"] == "podinfo-canary"

    apply(router, canary, RouteState(canary_weight=20))
    assert set(objects.store[POLICY]["spec"]) == {"service", "timeout", "retries"}


def test_fields_other_managers_own_are_left_alone() -> None:
    objects = InMemoryObjects()
    router = router_for("istio", objects)
    canary = make_canary()
    apply(router, canary, RouteState())
    key = ("networking.istio.io/v1beta1", "VirtualService", NS, "podinfo")
    objects.store[key]["metadata"]["labels"] = {"added-by": "someone-else"}
    apply(router, canary, RouteState(canary_weight=10))
    assert objects.store[key]["metadata"]["labels"] == {"added-by": "someone-else"}
    weights = [d["weight"] for d in objects.store[key]["spec"]["http"][0]["route"]]
    assert weights == [90, 10]


def _services(selectors: dict[str, str]) -> InMemoryObjects:
    return InMemoryObjects(
        *(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9898}]},
            }
            for name, app in selectors.items()
        )
    )


def test_kubernetes_router_switches_the_apex_selector_and_keeps_the_rest() -> None:
    objects = _services(
        {"podinfo": "podinfo-primary", "podinfo-primary": "podinfo-primary", "podinfo-canary": "podinfo"}
    )
    router = router_for("kubernetes", objects)
    apex = ("v1", "Service", NS, "podinfo")

    apply(router, make_canary(), RouteState(canary_weight=100))
    assert objects.store[apex]["spec"] == {
        "selector": {"app": "podinfo"},
        "ports": [{"name": "http", "port": 9898}],
    }
    apply(router, make_canary(), RouteState())
    assert objects.store[apex]["spec"]["selector"] == {"app": "podinfo-primary"}


def test_kubernetes_router_needs_the_side_service() -> None:
    router = router_for("kubernetes", _services({"podinfo": "podinfo-primary"}))
    with pytest.raises(LookupError, match="Service test/podinfo-canary has no selector"):
        apply(router, make_canary(), RouteState(canary_weight=100))


def test_apply_refuses_what_the_router_cannot_express() -> None:
    objects = InMemoryObjects()
    with pytest.raises(UnsupportedRoutes, match="router smi:v1alpha2 cannot inject faults"):
        apply(router_for("smi:v1alpha2", objects), make_canary(), RouteState(canary_weight=100, fault=FAULT))
    assert objects.store == {}


QUERY_MATCH = (HTTPMatchRequest.model_validate({"queryParams": {"canary": {"exact": "1"}}}),)
SUFFIX_MATCH = (HTTPMatchRequest.model_validate({"headers": {"x-user": {"suffix": "@example.com"}}}),)


@pytest.mark.parametrize(
    ("provider", "routes", "reason"),
    [
        (
            "smi:v1alpha2",
            RouteState(canary_weight=100, fault=FAULT),
            "router smi:v1alpha2 cannot inject faults",
        ),
        ("linkerd", RouteState(mirror_weight=50), "router linkerd cannot mirror traffic"),
        ("smi:v1alpha2", RouteState(match=AB_MATCH), "router smi:v1alpha2 cannot route by header"),
        ("smi:v1alpha4", RouteState(canary_weight=30, match=AB_MATCH), "cannot combine a header route"),
        ("canaryctl", RouteState(canary_weight=30, match=AB_MATCH), "router canaryctl cannot combine"),
        ("canaryctl", RouteState(match=QUERY_MATCH), "router canaryctl cannot match on queryParams"),
        (
            "istio",
            RouteState(canary_weight=30, fault=FAULT),
            "router istio cannot fault only the canary's share",
        ),
        ("istio", RouteState(match=SUFFIX_MATCH), "router istio cannot match a suffix"),
        (
            "gatewayapi:v1",
            RouteState(canary_weight=100, fault=FAULT),
            "router gatewayapi:v1 cannot inject faults",
        ),
        ("kubernetes", RouteState(canary_weight=10), "router kubernetes cannot split traffic 90/10"),
        ("kubernetes", RouteState(match=AB_MATCH), "router kubernetes cannot route by header"),
        ("kubernetes", RouteState(mirror_weight=100), "router kubernetes cannot mirror traffic"),
        ("kuma", RouteState(canary_weight=10, fault=FAULT), "router kuma cannot inject faults"),
        (
            "kuma",
            RouteState(match=(HTTPMatchRequest.model_validate({"authority": {"exact": "a"}}),)),
            "authority",
        ),
        ("osm", RouteState(match=AB_MATCH), "router osm cannot route by header"),
        ("osm", RouteState(mirror_weight=10), "router osm cannot mirror traffic"),
        ("osm", RouteState(canary_weight=100, fault=FAULT), "router osm cannot inject faults"),
        ("appmesh:v1beta2", RouteState(mirror_weight=10), "router appmesh:v1beta2 cannot mirror traffic"),
        ("appmesh:v1beta2", RouteState(canary_weight=100, fault=FAULT), "cannot inject faults"),
        (
            "appmesh:v1beta2",
            RouteState(match=QUERY_MATCH),
            "router appmesh:v1beta2 cannot match on queryParams",
        ),
    ],
)
def test_unsupported_reasons_name_the_router(provider: str, routes: RouteState, reason: str) -> None:
    found = router_for(provider, InMemoryObjects()).unsupported(routes)
    assert found is not None and reason in found


@pytest.mark.parametrize(
    ("provider", "routes"),
    [
        ("canaryctl", RouteState(canary_weight=30, mirror_weight=20, fault=FAULT)),
        ("canaryctl", RouteState(canary_weight=100, match=AB_MATCH)),  # everything goes to the canary anyway
        ("istio", RouteState(canary_weight=30, match=AB_MATCH, mirror_weight=20)),
        ("gatewayapi:v1", RouteState(canary_weight=30, match=QUERY_MATCH + SUFFIX_MATCH, mirror_weight=20)),
        ("kubernetes", RouteState(canary_weight=100)),
        ("kuma", RouteState(canary_weight=30, match=QUERY_MATCH + SUFFIX_MATCH, mirror_weight=20)),
        ("appmesh:v1beta2", RouteState(canary_weight=30, match=AB_MATCH + SUFFIX_MATCH)),
    ],
)
def test_supported_combinations(provider: str, routes: RouteState) -> None:
    assert router_for(provider, InMemoryObjects()).unsupported(routes) is None


FAULT_STEPS: dict[str, Any] = {
    "interval": "10s",
    "steps": [
        {"setWeight": 10},
        {"analysis": {"iterations": 1}},
        {"fault": {"abort": {"httpStatus": 503, "percentage": 5}, "duration": "30s"}},
        {"setWeight": 100},
    ],
}


def test_unsupported_steps_names_router_and_step() -> None:
    canary = make_canary(analysis=FAULT_STEPS)
    found = unsupported_steps(canary, router_for("smi:v1alpha2", InMemoryObjects()))
    assert found == (
        "router smi:v1alpha2 cannot inject faults (SMI has no fault injection) "
        "(step 3: fault on canary × 3 checks)"
    )
    istio = unsupported_steps(canary, router_for("istio", InMemoryObjects()))
    assert istio is not None and istio.startswith("router istio cannot fault only the canary's share")
    assert unsupported_steps(canary, router_for("canaryctl", InMemoryObjects())) is None


def test_unsupported_steps_for_flagger_strategies() -> None:
    objects = InMemoryObjects()
    kubernetes, smi1 = router_for("kubernetes", objects), router_for("smi:v1alpha1", objects)
    blue_green = make_canary(analysis={"interval": "10s", "iterations": 3})
    assert unsupported_steps(blue_green, kubernetes) is None
    stepped_promotion = make_canary(analysis={"interval": "10s", "iterations": 3, "stepWeightPromotion": 30})
    assert unsupported_steps(stepped_promotion, kubernetes) == (
        "router kubernetes cannot split traffic 30/70 (a Service selects all primary or all canary pods); "
        "use blue/green or a mesh provider (promotion)"
    )
    weighted = make_canary()
    assert unsupported_steps(weighted, kubernetes) == (
        "router kubernetes cannot split traffic 90/10 (a Service selects all primary or all canary pods); "
        "use blue/green or a mesh provider (step 1: setWeight 10%)"
    )
    assert unsupported_steps(weighted, smi1) is None
    ab = make_canary(
        analysis={"interval": "10s", "iterations": 3, "match": [{"headers": {"x-canary": {"exact": "1"}}}]}
    )
    found = unsupported_steps(ab, smi1)
    assert found is not None and found.endswith("(step 1: headerRoute (matching requests to canary))")
    mirrored = make_canary(analysis={"interval": "10s", "iterations": 3, "mirror": True, "mirrorWeight": 40})
    found = unsupported_steps(mirrored, router_for("gatewayapi", objects))
    assert found is None
    found = unsupported_steps(mirrored, smi1)
    assert found is not None and found.endswith("(step 1: mirror 40%)")


def crd(path: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all((SCHEMAS / path).read_text()) if d)


@pytest.mark.parametrize(
    ("schema", "refused"),
    [("gateway-api-v1.2.1-standard-httproutes.yaml", True), ("gateway-api-v1.6.1-httproutes.yaml", False)],
)
def test_gatewayapi_partial_mirror_needs_a_crd_that_keeps_the_percentage(schema: str, refused: bool) -> None:
    """Gateway API before v1.3 prunes requestMirror.percent: a 30% mirror would mirror everything, so it
    is refused once the router has read the installed CRD; a 100% mirror needs no percentage."""
    objects = InMemoryObjects(crd(schema))
    router = router_for("gatewayapi:v1", objects)
    mirror = RouteState(mirror_weight=30)
    assert router.unsupported(mirror) is None  # not read yet: nothing known
    if refused:
        with pytest.raises(
            UnsupportedRoutes, match=r"cannot mirror 30% of requests: the installed HTTPRoute CRD"
        ):
            apply(router, make_canary(), mirror)
        assert router.unsupported(mirror) is not None  # remembered for the pre-check of later rollouts
        apply(router, make_canary(), RouteState(mirror_weight=100))
    else:
        apply(router, make_canary(), mirror)
        [route] = objects.kind("HTTPRoute")
        [mirror_filter] = route["spec"]["rules"][-1]["filters"]
        assert mirror_filter["requestMirror"]["percent"] == 30
