"""The ingress routers (nginx, contour, gloo, skipper) write the objects Flagger writes for the same
Canary, valid against each project's published schema, and refuse what they cannot express."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.drift import APPLIED_ANNOTATION
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import (
    UnsupportedRoutes,
    router_for,
    spec_problem,
    unsupported_steps,
)
from canaryctl_providers.routers.contour import RETRY_ON
from tests.providers.routers.cases import (
    APISIX_API,
    FAULT,
    NS,
    UID,
    InMemoryObjects,
    apisix_canary,
    ingress_canary,
    make_canary,
    ref,
    side_services,
    user_apisix_route,
    user_ingress,
)
from tests.schemas.validation import crd_schemas, validate

INGRESS = ("networking.k8s.io/v1", "Ingress", NS)
PREFIX = "nginx.ingress.kubernetes.io"


def header(name: str, **value: str) -> HTTPMatchRequest:
    return HTTPMatchRequest.model_validate({"headers": {name: value}})


def written(provider: str, canary: Canary, routes: RouteState, *extra: dict[str, Any]) -> InMemoryObjects:
    """What the router stored after applying ``routes``, every object validated against its schema."""
    objects = InMemoryObjects(*side_services(canary), *extra)
    before = set(objects.store)
    asyncio.run(router_for(provider, objects).apply(canary, routes))
    for key in set(objects.store) - before:
        validate(objects.store[key])
    return objects


def canary_ingress(objects: InMemoryObjects) -> dict[str, Any]:
    return objects.store[(*INGRESS, "podinfo-canary")]


def backends(ingress: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (path["path"], path["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


# --- nginx ---------------------------------------------------------------------------------------------


def test_nginx_writes_a_weighted_canary_ingress_like_flagger() -> None:
    canary = ingress_canary()
    stale = {f"{PREFIX}/canary-by-header": "x-old", "team": "web"}
    objects = written("nginx", canary, RouteState(canary_weight=10), user_ingress(**stale))
    copy = canary_ingress(objects)
    assert backends(copy) == [("/", "podinfo-canary"), ("/docs", "docs")]
    annotations = {k: v for k, v in copy["metadata"]["annotations"].items() if k != APPLIED_ANNOTATION}
    assert annotations == {
        "kubernetes.io/ingress.class": "nginx",
        "team": "web",
        f"{PREFIX}/canary": "true",
        f"{PREFIX}/canary-weight": "10",
    }
    assert copy["metadata"]["labels"] == {"app": "podinfo"}
    assert copy["metadata"]["ownerReferences"][0]["uid"] == UID
    assert copy["spec"]["ingressClassName"] == "nginx"
    assert objects.store[(*INGRESS, "podinfo")] == user_ingress(**stale)  # the user's Ingress untouched


def test_nginx_switches_the_canary_off_at_weight_zero() -> None:
    objects = written("nginx", ingress_canary(), RouteState(), user_ingress())
    annotations = canary_ingress(objects)["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith(PREFIX)} == {f"{PREFIX}/canary": "false"}


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (
            header("x-canary", exact="insider"),
            {"canary-by-header": "x-canary", "canary-by-header-value": "insider"},
        ),
        (
            header("x-canary", regex="^in.*"),
            {"canary-by-header": "x-canary", "canary-by-header-pattern": "^in.*"},
        ),
        (
            header("x-canary", prefix="in"),
            {"canary-by-header": "x-canary", "canary-by-header-pattern": "^in.*"},
        ),
        (header("cookie", exact="canary"), {"canary-by-cookie": "canary"}),
    ],
)
def test_nginx_header_routes(match: HTTPMatchRequest, expected: dict[str, str]) -> None:
    objects = written("nginx", ingress_canary(), RouteState(match=(match,)), user_ingress())
    annotations = canary_ingress(objects)["metadata"]["annotations"]
    canary_keys = {k.removeprefix(f"{PREFIX}/"): v for k, v in annotations.items() if k.startswith(PREFIX)}
    assert canary_keys == {"canary": "true", "canary-weight": "0", **expected}


def test_nginx_header_and_cookie_together() -> None:
    routes = RouteState(match=(header("x-canary", exact="1"), header("cookie", exact="canary")))
    annotations = canary_ingress(written("nginx", ingress_canary(), routes, user_ingress()))["metadata"][
        "annotations"
    ]
    assert annotations[f"{PREFIX}/canary-by-header"] == "x-canary"
    assert annotations[f"{PREFIX}/canary-by-cookie"] == "canary"


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        (RouteState(mirror_weight=30), "cannot mirror"),
        (RouteState(canary_weight=10, fault=FAULT), "cannot inject faults"),
        (
            RouteState(
                match=(
                    HTTPMatchRequest.model_validate({"headers": {"a": {"exact": "1"}, "b": {"exact": "2"}}}),
                )
            ),
            "exactly one header",
        ),
        (RouteState(match=(header("a", exact="1"), header("b", exact="2"))), "one header and one cookie"),
        (RouteState(match=(header("cookie", regex="canary=.*"),)), "cookie by its name only"),
        (
            RouteState(match=(HTTPMatchRequest.model_validate({"uri": {"prefix": "/api"}}),)),
            "cannot match on uri",
        ),
    ],
)
def test_nginx_refuses_what_ingress_nginx_cannot_express(routes: RouteState, reason: str) -> None:
    objects = InMemoryObjects(user_ingress())
    with pytest.raises(UnsupportedRoutes, match=reason):
        asyncio.run(router_for("nginx", objects).apply(ingress_canary(), routes))
    assert not objects.kind("Ingress")[1:]  # nothing written


@pytest.mark.parametrize("provider", ["nginx", "skipper"])
def test_ingress_routers_need_an_ingress_ref_in_the_canary_namespace(provider: str) -> None:
    router = router_for(provider, InMemoryObjects())
    assert spec_problem(make_canary(), router) == (
        f"spec.ingressRef: required by router {provider} (the Ingress it copies for the canary)"
    )
    other = ingress_canary()
    assert other.spec.ingress_ref is not None
    elsewhere = other.spec.ingress_ref.model_copy(update={"namespace": "other"})
    other = other.model_copy(update={"spec": other.spec.model_copy(update={"ingress_ref": elsewhere})})
    assert "must be in the Canary's namespace 'test'" in (spec_problem(other, router) or "")
    assert spec_problem(ingress_canary(), router) is None
    with pytest.raises(LookupError, match="Ingress test/podinfo not found"):
        asyncio.run(router.apply(ingress_canary(), RouteState(canary_weight=10)))
    lost = user_ingress()
    lost["spec"]["rules"][0]["http"]["paths"] = lost["spec"]["rules"][0]["http"]["paths"][1:]
    with pytest.raises(LookupError, match="no path with backend Service 'podinfo'"):
        asyncio.run(router_for(provider, InMemoryObjects(lost)).apply(ingress_canary(), RouteState()))


# --- skipper -------------------------------------------------------------------------------------------


def test_skipper_writes_weighted_backends_like_flagger() -> None:
    source = user_ingress(**{"zalando.org/skipper-predicate": "Header(`X-Team`, `web`) && Weight(100)"})
    objects = written("skipper", ingress_canary(), RouteState(canary_weight=30), source)
    copy = canary_ingress(objects)
    assert backends(copy) == [("/", "podinfo-primary"), ("/docs", "docs"), ("/", "podinfo-canary")]
    annotations = copy["metadata"]["annotations"]
    assert json.loads(annotations["zalando.org/backend-weights"]) == {
        "podinfo-primary": 70,
        "podinfo-canary": 30,
    }
    assert annotations["zalando.org/skipper-predicate"] == "Weight(100) && Header(`X-Team`, `web`)"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations

    idle = canary_ingress(written("skipper", ingress_canary(), RouteState(), source))["metadata"][
        "annotations"
    ]
    assert idle["zalando.org/skipper-predicate"] == "False() && Header(`X-Team`, `web`)"
    assert json.loads(idle["zalando.org/backend-weights"]) == {"podinfo-primary": 100, "podinfo-canary": 0}


def test_skipper_splits_by_weight_only() -> None:
    canary = ingress_canary(
        {"interval": "10s", "iterations": 2, "match": [{"headers": {"x": {"exact": "1"}}}]}
    )
    problem = unsupported_steps(canary, router_for("skipper", InMemoryObjects()))
    assert problem is not None and problem.startswith("router skipper cannot route by header")


# --- contour -------------------------------------------------------------------------------------------

PROXY = ("projectcontour.io/v1", "HTTPProxy", NS, "podinfo")
L5D = "l5d-dst-override"


def contour_services(route: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    """(name, weight, Linkerd override) of each service of a route."""
    return [
        (s["name"], s.get("weight"), s["requestHeadersPolicy"]["set"][0]["value"]) for s in route["services"]
    ]


def test_contour_writes_a_weighted_http_proxy_like_flagger() -> None:
    proxy = written("contour", make_canary(), RouteState(canary_weight=10)).store[PROXY]
    assert proxy["metadata"]["ownerReferences"][0]["uid"] == UID
    (route,) = proxy["spec"]["routes"]
    assert route["conditions"] == [{"prefix": "/"}]
    assert contour_services(route) == [
        ("podinfo-primary", 90, "podinfo-primary.test.svc.cluster.local:9898"),
        ("podinfo-canary", 10, "podinfo-canary.test.svc.cluster.local:9898"),
    ]
    assert route["timeoutPolicy"] == {"response": "30s", "idle": "5m"}
    assert route["retryPolicy"] == {"count": 3, "perTryTimeout": "5s", "retryOn": ["gateway-error", "reset"]}

    idle = written("contour", make_canary(), RouteState()).store[PROXY]["spec"]["routes"][0]
    assert [(name, weight) for name, weight, _ in contour_services(idle)] == [
        ("podinfo-primary", 100),
        ("podinfo-canary", None),  # Contour reads a missing weight as 0 when another service has one
    ]


def test_contour_header_route_is_tried_before_the_weighted_route() -> None:
    service = {"port": 9898, "match": [{"uri": {"prefix": "/api"}}]}
    routes = RouteState(match=(header("x-canary", exact="insider"), header("cookie", suffix="canary=always")))
    proxy = written("contour", make_canary(service), routes).store[PROXY]
    first, second, weighted = proxy["spec"]["routes"]
    assert first["conditions"] == [{"prefix": "/api", "header": {"name": "x-canary", "exact": "insider"}}]
    assert second["conditions"] == [
        {"prefix": "/api", "header": {"name": "cookie", "regex": ".*canary=always$"}}
    ]
    for route in (first, second):
        assert [(name, weight) for name, weight, _ in contour_services(route)] == [
            ("podinfo-primary", None),
            ("podinfo-canary", 100),
        ]
    assert weighted["conditions"] == [{"prefix": "/api"}]
    assert [weight for _, weight, _ in contour_services(weighted)] == [100, None]


def test_contour_refuses_what_an_http_proxy_cannot_say() -> None:
    router = router_for("contour", InMemoryObjects())
    assert "cannot mirror" in (router.unsupported(RouteState(mirror_weight=20)) or "")
    assert "cannot inject faults" in (router.unsupported(RouteState(canary_weight=10, fault=FAULT)) or "")
    exact_path = make_canary({"port": 9898, "match": [{"uri": {"exact": "/api"}}]})
    assert (
        spec_problem(exact_path, router) == "spec.service.match[0].uri: router contour can only use a prefix"
    )
    retries = {"port": 9898, "retries": {"attempts": 2, "retryOn": "5xx,reset,no-such-thing"}}
    assert spec_problem(make_canary(retries), router) == (
        "spec.service.retries.retryOn: Contour does not retry on no-such-thing"
    )


def test_contour_knows_the_retry_conditions_of_the_schema() -> None:
    schema = crd_schemas()[("projectcontour.io/v1", "HTTPProxy")]
    route = schema["properties"]["spec"]["properties"]["routes"]["items"]
    assert set(route["properties"]["retryPolicy"]["properties"]["retryOn"]["items"]["enum"]) == RETRY_ON


def test_the_schema_check_rejects_a_misnamed_http_proxy_field() -> None:
    """The vendored schema is strict: a field Contour does not know (pruned by a real API server) fails."""
    proxy = written("contour", make_canary(), RouteState(canary_weight=10)).store[PROXY]
    proxy["spec"]["routes"][0]["retryPolicy"] = {"attempts": 3}
    with pytest.raises(AssertionError, match="attempts"):
        validate(proxy)


# --- gloo ----------------------------------------------------------------------------------------------

TABLE = ("gateway.solo.io/v1", "RouteTable", NS, "podinfo")
PRIMARY_UPSTREAM = ("gloo.solo.io/v1", "Upstream", NS, "test-podinfo-primaryupstream-9898")
CANARY_UPSTREAM = ("gloo.solo.io/v1", "Upstream", NS, "test-podinfo-canaryupstream-9898")


def destinations(route: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [
        (d["destination"]["upstream"]["name"], d.get("weight"))
        for d in route["routeAction"]["multi"]["destinations"]
    ]


def test_gloo_writes_upstreams_and_a_weighted_route_table_like_flagger() -> None:
    objects = written("gloo", make_canary(), RouteState(canary_weight=10))
    (route,) = objects.store[TABLE]["spec"]["routes"]
    assert route["inheritablePathMatchers"] is True
    assert destinations(route) == [
        ("test-podinfo-primaryupstream-9898", 90),
        ("test-podinfo-canaryupstream-9898", 10),
    ]
    assert objects.store[CANARY_UPSTREAM]["spec"] == {
        "kube": {
            "serviceName": "podinfo-canary",
            "serviceNamespace": NS,
            "servicePort": 9898,
            "selector": {"app": "podinfo"},
        }
    }
    assert objects.store[PRIMARY_UPSTREAM]["spec"]["kube"]["selector"] == {"app": "podinfo-primary"}


def test_gloo_copies_the_settings_of_the_upstream_ref() -> None:
    config: dict[str, Any] = {
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Upstream",
        "metadata": {"name": "tuned", "namespace": NS},
        "spec": {
            "loadBalancerConfig": {"roundRobin": {}},
            "connectionConfig": {"maxRequestsPerConnection": 10},
            "useHttp2": True,
            "kube": {"serviceName": "elsewhere", "serviceNamespace": NS, "servicePort": 80},
            "healthChecks": [{"timeout": "1s"}],
        },
    }
    canary = make_canary()
    canary = canary.model_copy(
        update={
            "spec": canary.spec.model_copy(
                update={"upstream_ref": ref("gloo.solo.io/v1", "Upstream", "tuned")}
            )
        }
    )
    spec = written("gloo", canary, RouteState(canary_weight=10), config).store[CANARY_UPSTREAM]["spec"]
    assert spec["kube"]["serviceName"] == "podinfo-canary"
    assert {k: spec[k] for k in ("loadBalancerConfig", "connectionConfig", "useHttp2")} == {
        k: config["spec"][k] for k in ("loadBalancerConfig", "connectionConfig", "useHttp2")
    }
    assert "healthChecks" not in spec  # Flagger copies a fixed list of settings


def test_gloo_refuses_an_upstream_ref_using_another_namespace_secret() -> None:
    config = {
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Upstream",
        "metadata": {"name": "tls", "namespace": NS},
        "spec": {"sslConfig": {"secretRef": {"name": "their-cert", "namespace": "payments"}}},
    }
    canary = make_canary()
    canary = canary.model_copy(
        update={
            "spec": canary.spec.model_copy(update={"upstream_ref": ref("gloo.solo.io/v1", "Upstream", "tls")})
        }
    )
    objects = InMemoryObjects(*side_services(canary), config)
    with pytest.raises(ValueError, match="uses Secret payments/their-cert"):
        asyncio.run(router_for("gloo", objects).apply(canary, RouteState(canary_weight=10)))
    assert not objects.kind("Upstream")[1:] and not objects.kind("RouteTable")

    elsewhere = {**config, "metadata": {"name": "tls", "namespace": "gloo-system"}}
    elsewhere["spec"] = {"sslConfig": {"sds": {"certificatesSecretName": "gateway-client"}}}
    canary = canary.model_copy(
        update={"spec": canary.spec.model_copy(update={"upstream_ref": elsewhere_ref()})}
    )
    objects = InMemoryObjects(*side_services(canary), elsewhere)
    with pytest.raises(ValueError, match="is in another namespace and has an sslConfig"):
        asyncio.run(router_for("gloo", objects).apply(canary, RouteState(canary_weight=10)))


def elsewhere_ref() -> Any:
    found = ref("gloo.solo.io/v1", "Upstream", "tls")
    return found.model_copy(update={"namespace": "gloo-system"})


def test_gloo_header_route_goes_first() -> None:
    match = HTTPMatchRequest.model_validate(
        {"headers": {"x-canary": {"regex": "^in.*"}}, "method": {"exact": "GET"}}
    )
    routes = RouteState(match=(header("x-canary", exact="insider"), match))
    ab, weighted = written("gloo", make_canary(), routes).store[TABLE]["spec"]["routes"]
    assert ab["matchers"] == [
        {"headers": [{"name": "x-canary", "value": "insider"}]},
        {"headers": [{"name": "x-canary", "value": "^in.*", "regex": True}], "methods": ["GET"]},
    ]
    assert destinations(ab) == [
        ("test-podinfo-primaryupstream-9898", None),
        ("test-podinfo-canaryupstream-9898", 100),
    ]
    assert "matchers" not in weighted
    assert destinations(weighted) == [
        ("test-podinfo-primaryupstream-9898", 100),
        ("test-podinfo-canaryupstream-9898", None),
    ]
    router = router_for("gloo", InMemoryObjects())
    assert "cannot mirror" in (router.unsupported(RouteState(mirror_weight=20)) or "")


# --- traefik -------------------------------------------------------------------------------------------

TRAEFIK_SERVICE = ("traefik.io/v1alpha1", "TraefikService", NS, "podinfo")


def traefik_weights(routes: RouteState) -> list[tuple[str, str, int, int]]:
    service = written("traefik", make_canary(), routes).store[TRAEFIK_SERVICE]
    return [
        (s["name"], s["namespace"], s["port"], s["weight"]) for s in service["spec"]["weighted"]["services"]
    ]


def test_traefik_writes_a_weighted_traefik_service_like_flagger() -> None:
    assert traefik_weights(RouteState(canary_weight=10)) == [
        ("podinfo-primary", NS, 9898, 90),
        ("podinfo-canary", NS, 9898, 10),
    ]
    assert traefik_weights(RouteState()) == [("podinfo-primary", NS, 9898, 100)]
    # Traefik reads a missing weight as 1: the primary is left out instead of written without one.
    assert traefik_weights(RouteState(canary_weight=100)) == [("podinfo-canary", NS, 9898, 100)]


def test_traefik_splits_by_weight_only() -> None:
    router = router_for("traefik", InMemoryObjects())
    assert "cannot route by header" in (router.unsupported(RouteState(match=(header("x", exact="1"),))) or "")
    assert "cannot mirror" in (router.unsupported(RouteState(mirror_weight=10)) or "")
    assert "cannot inject faults" in (router.unsupported(RouteState(canary_weight=10, fault=FAULT)) or "")


# --- apisix --------------------------------------------------------------------------------------------


def test_apisix_writes_a_weighted_canary_route_like_flagger() -> None:
    objects = written("apisix", apisix_canary(), RouteState(canary_weight=10), user_apisix_route())
    copy = objects.store[(APISIX_API, "ApisixRoute", NS, "web-podinfo-canary")]
    assert copy["metadata"]["labels"] == {"app": "podinfo"}
    assert copy["metadata"]["ownerReferences"][0]["uid"] == UID
    assert copy["spec"]["ingressClassName"] == "apisix"
    (route,) = copy["spec"]["http"]
    assert (route["name"], route["priority"], route["match"]) == (
        "app",
        10000,
        user_apisix_route()["spec"]["http"][1]["match"],
    )
    assert route["backends"] == [
        {
            "serviceName": "podinfo-primary",
            "servicePort": 9898,
            "resolveGranularity": "service",
            "weight": 90,
        },
        {"serviceName": "podinfo-canary", "servicePort": 9898, "resolveGranularity": "service", "weight": 10},
    ]
    assert objects.store[(APISIX_API, "ApisixRoute", NS, "web")] == user_apisix_route()


def test_apisix_needs_a_route_ref_with_one_apex_backend() -> None:
    router = router_for("apisix", InMemoryObjects())
    assert spec_problem(make_canary(), router) == (
        "spec.routeRef: required by router apisix (the ApisixRoute it copies for the canary)"
    )
    source = user_apisix_route()
    source["spec"]["http"][1]["backends"].append({"serviceName": "other", "servicePort": 80})
    with pytest.raises(LookupError, match="route 'app' must have one backend, Service 'podinfo'"):
        asyncio.run(router_for("apisix", InMemoryObjects(source)).apply(apisix_canary(), RouteState()))
    source["spec"]["http"] = source["spec"]["http"][:1]
    with pytest.raises(LookupError, match="no HTTP route with backend Service 'podinfo'"):
        asyncio.run(router_for("apisix", InMemoryObjects(source)).apply(apisix_canary(), RouteState()))
    assert "cannot route by header" in (router.unsupported(RouteState(match=(header("x", exact="1"),))) or "")
