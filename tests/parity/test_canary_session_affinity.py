"""Flagger's session affinity router tests (fluxcd/flagger pkg/router/istio_test.go and
gateway_api_test.go), expressed against canaryctl's Istio and Gateway API routers; every object is
validated against the vendored Istio 1.30.3 and Gateway API v1.6.1 CRDs. Routers that cannot route by
cookie refuse the Canary up front (an InvalidSpec condition in the operator).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import ROUTERS, router_for, unsupported_steps
from tests.providers.routers.cases import AB_MATCH, make_canary
from tests.providers.routers.cases import InMemoryObjects as Objects
from tests.schemas.validation import validate

Obj = dict[str, Any]
AFFINITY: Obj = {"cookieName": "flagger-cookie", "maxAge": 300}


def sticky_canary(affinity: Obj, phase: str = "Progressing", revision: str = "rev-2") -> Canary:
    canary = make_canary(analysis={"interval": "10s", "stepWeight": 10, "sessionAffinity": affinity})
    return canary.model_validate(
        {**canary.model_dump(by_alias=True), "status": {"phase": phase, "lastAppliedSpec": revision}}
    )


def written(provider: str, canary: Canary, routes: RouteState) -> list[Obj]:
    objects = ROUTERS[provider](Objects())
    found = asyncio.run(objects.desired(canary, routes))
    for obj in found:
        if not obj["apiVersion"].startswith("mesh."):
            validate(obj)
    return found


def cookie_pair(set_cookie: str) -> tuple[str, str]:
    name, _, rest = set_cookie.partition("=")
    return name, rest.split(";")[0]


def istio_routes(canary: Canary, routes: RouteState) -> list[Obj]:
    (vs,) = [o for o in written("istio", canary, routes) if o["kind"] == "VirtualService"]
    routes_: list[Obj] = vs["spec"]["http"]
    return routes_


def weights(route: Obj) -> dict[str, int]:
    return {d["destination"]["host"]: d["weight"] for d in route["route"]}


def test_istio_without_primary_cookie() -> None:
    """TestIstioRouter_getSessionAffinityRoutes "without primary cookie" (pkg/router/istio_test.go)."""
    canary = sticky_canary(AFFINITY)
    sticky, weighted = istio_routes(canary, RouteState(canary_weight=10))
    assert weights(sticky) == {"podinfo-primary": 0, "podinfo-canary": 100}
    assert weights(weighted) == {"podinfo-primary": 90, "podinfo-canary": 10}
    set_cookie = weighted["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
    name, value = cookie_pair(set_cookie)
    assert name == "flagger-cookie" and set_cookie == f"{name}={value}; Max-Age=300"
    regex = sticky["match"][0]["headers"]["Cookie"]["regex"]
    assert re.fullmatch(regex, f"a=b; {name}={value}; c=d")
    assert not re.fullmatch(regex, f"{name}x={value}")
    assert "headers" not in weighted["route"][0]  # no primary cookie asked for

    # Canary weight back to 0 (promotion or rollback): the cookie is deleted from clients showing it.
    expiring, weighted = istio_routes(canary, RouteState())
    assert expiring["headers"]["response"]["add"]["Set-Cookie"] == f"{name}={value}; Max-Age=-1"
    assert re.fullmatch(expiring["match"][0]["headers"]["Cookie"]["regex"], f"{name}={value}")
    assert weights(expiring) == weights(weighted) == {"podinfo-primary": 100, "podinfo-canary": 0}


def test_istio_with_primary_cookie() -> None:
    """TestIstioRouter_getSessionAffinityRoutes "with primary cookie" (pkg/router/istio_test.go): the
    primary's cookie lasts one analysis interval."""
    canary = sticky_canary({**AFFINITY, "primaryCookieName": "primary-cookie"})
    to_canary, to_primary, weighted = istio_routes(canary, RouteState(canary_weight=10))
    assert weights(to_canary)["podinfo-canary"] == 100 and weights(to_primary)["podinfo-primary"] == 100
    primary_cookie = weighted["route"][0]["headers"]["response"]["add"]["Set-Cookie"]
    assert primary_cookie.startswith("primary-cookie=") and primary_cookie.endswith("; Max-Age=10")
    name, value = cookie_pair(primary_cookie)
    assert re.fullmatch(to_primary["match"][0]["headers"]["Cookie"]["regex"], f"{name}={value}")


def test_cookie_attributes_follow_build_cookie() -> None:
    """BuildCookie (pkg/apis/flagger/v1beta1/canary.go): Flagger's attribute order."""
    affinity = {**AFFINITY, "domain": "example.com", "httpOnly": True, "path": "/", "sameSite": "Lax"}
    affinity |= {"secure": True, "partitioned": True}
    _, weighted = istio_routes(sticky_canary(affinity), RouteState(canary_weight=10))
    set_cookie = weighted["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
    attributes = set_cookie.split("; ")[1:]
    assert attributes == [
        "Max-Age=300",
        "Domain=example.com",
        "HttpOnly",
        "Partitioned",
        "Path=/",
        "SameSite=Lax",
        "Secure",
    ]


def test_a_new_rollout_gets_a_new_cookie_and_replicas_agree() -> None:
    """Flagger draws a new cookie per rollout; canaryctl derives it from the revision under analysis."""
    first = istio_routes(sticky_canary(AFFINITY, revision="rev-2"), RouteState(canary_weight=10))
    again = istio_routes(sticky_canary(AFFINITY, revision="rev-2"), RouteState(canary_weight=20))
    other = istio_routes(sticky_canary(AFFINITY, revision="rev-3"), RouteState(canary_weight=10))
    regex = [r[0]["match"][0]["headers"]["Cookie"]["regex"] for r in (first, again, other)]
    assert regex[0] == regex[1] != regex[2]


def test_istio_ab_hands_out_the_cookie_too() -> None:
    """A/B: a client matched once by the header route keeps reaching the canary by its cookie."""
    header, sticky, weighted = istio_routes(sticky_canary(AFFINITY), RouteState(match=AB_MATCH))
    assert weights(header)["podinfo-canary"] == 100
    assert "Set-Cookie" in header["route"][1]["headers"]["response"]["add"]
    assert weights(sticky)["podinfo-canary"] == 100
    assert weights(weighted)["podinfo-primary"] == 100


def gateway_rules(canary: Canary, routes: RouteState) -> list[Obj]:
    (route,) = written("gatewayapi:v1", canary, routes)
    rules: list[Obj] = route["spec"]["rules"]
    return rules


def backend_weights(rule: Obj) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in rule["backendRefs"]}


def test_gateway_api_session_affinity_rules() -> None:
    """TestGatewayAPIRouter_getSessionAffinityRouteRules (pkg/router/gateway_api_test.go)."""
    canary = sticky_canary({**AFFINITY, "primaryCookieName": "primary-cookie"})
    to_canary, to_primary, weighted = gateway_rules(canary, RouteState(canary_weight=10))
    assert backend_weights(to_canary) == {"podinfo-primary": 0, "podinfo-canary": 100}
    assert backend_weights(to_primary) == {"podinfo-primary": 100, "podinfo-canary": 0}
    filters = {b["name"]: b["filters"][0] for b in weighted["backendRefs"]}
    canary_cookie = filters["podinfo-canary"]["responseHeaderModifier"]["add"][0]
    assert canary_cookie["name"] == "Set-Cookie" and canary_cookie["value"].endswith("; Max-Age=300")
    name, value = cookie_pair(canary_cookie["value"])
    match = to_canary["matches"][0]["headers"][0]
    assert match["type"] == "RegularExpression" and match["name"] == "Cookie"
    assert re.fullmatch(match["value"], f"{name}={value}")

    expiring, weighted = gateway_rules(canary, RouteState())
    header = expiring["filters"][0]["responseHeaderModifier"]["add"][0]
    assert header["value"] == f"{name}={value}; Max-Age=-1"
    assert (
        backend_weights(expiring)
        == backend_weights(weighted)
        == {"podinfo-primary": 100, "podinfo-canary": 0}
    )


def test_no_cookie_before_any_rollout() -> None:
    """Nothing to expire right after initialization (Flagger's status has no cookie yet)."""
    canary = sticky_canary(AFFINITY, phase="Initialized")
    assert len(istio_routes(canary, RouteState())) == 1
    assert len(gateway_rules(canary, RouteState())) == 1


@pytest.mark.parametrize(
    "provider", ["kubernetes", "smi", "smi:v1alpha4", "linkerd", "osm", "kuma", "appmesh:v1beta2"]
)
def test_routers_that_cannot_route_by_cookie_refuse_the_canary(provider: str) -> None:
    problem = unsupported_steps(sticky_canary(AFFINITY), router_for(provider, Objects()))
    assert problem is not None and "cannot express sessionAffinity" in problem


@pytest.mark.parametrize("provider", ["canaryctl", "istio", "gatewayapi", "gatewayapi:v1beta1"])
def test_routers_that_can_route_by_cookie_accept_it(provider: str) -> None:
    assert unsupported_steps(sticky_canary(AFFINITY), router_for(provider, Objects())) is None
