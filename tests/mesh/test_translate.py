"""SMI (all TrafficSplit versions, both HTTPRouteGroup header shapes) + TrafficPolicy → RouteSpec."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryctl_mesh import config
from canaryctl_mesh.api import MESH_GROUP, MESH_VERSION, TRAFFIC_POLICY_KIND, TrafficPolicy
from canaryctl_mesh.translate import (
    EXPORT_ANNOTATION,
    integer_weights,
    parse_export_to,
    parse_weight,
    translate_namespace,
    translate_split,
)

NS = "shop"


def _service(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def _slice(service: str, addresses: list[str], ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abc",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service},
        },
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": addresses, "conditions": {"ready": ready}}],
    }


SERVICES = [
    _service("web", "10.0.0.1"),
    _service("web-primary", "10.0.0.2"),
    _service("web-canary", "10.0.0.3"),
]
SLICES = [
    _slice("web-primary", ["10.1.0.1", "10.1.0.2"]),
    _slice("web-canary", ["10.1.0.9"]),
    _slice("web", []),
]


def _split(
    version: str, weights: tuple[Any, Any], matches: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "service": "web",
        "backends": [
            {"service": "web-primary", "weight": weights[0]},
            {"service": "web-canary", "weight": weights[1]},
        ],
    }
    if matches:
        spec["matches"] = matches
    return {
        "apiVersion": f"split.smi-spec.io/{version}",
        "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": NS},
        "spec": spec,
    }


def _weights(spec: config.RouteSpec) -> dict[str, int]:
    return {wb.backend.name: wb.weight for wb in spec.backends}


@pytest.mark.parametrize(
    ("version", "weights", "expected"),
    [
        ("v1alpha1", ("900m", "100m"), (900, 100)),
        ("v1alpha1", ("1", "500m"), (1000, 500)),
        ("v1alpha2", (90, 10), (90, 10)),
        ("v1alpha3", (75, 25), (75, 25)),
        ("v1alpha4", (0, 100), (0, 100)),
    ],
)
def test_split_versions(version: str, weights: tuple[Any, Any], expected: tuple[int, int]) -> None:
    spec = translate_split(_split(version, weights), SERVICES, SLICES)
    assert _weights(spec) == {"web-primary_shop": expected[0], "web-canary_shop": expected[1]}
    primary = spec.backends[0].backend
    assert primary.endpoints == (("10.1.0.1", 8080), ("10.1.0.2", 8080))
    assert "web.shop.svc.cluster.local:80" in spec.hosts and "10.0.0.1" in spec.hosts
    assert "web" not in spec.hosts and "web:80" not in spec.hosts  # short names: the own namespace only


def test_only_ip_endpoints_become_envoy_endpoints() -> None:
    """A hand-made FQDN EndpointSlice labelled for a service must not reach Envoy, which would refuse the
    cluster update of every sidecar that sees it (and every other cluster in that update)."""
    fqdn = _slice("web-primary", ["evil.example.com", "10.1.0.1"]) | {"addressType": "FQDN"}
    spec = translate_split(
        _split("v1alpha2", (50, 50)), SERVICES, [fqdn, _slice("web-canary", ["not an ip"])]
    )
    assert spec.backends[0].backend.endpoints == (("10.1.0.1", 8080),)
    canary = spec.backends[1].backend
    assert canary.endpoints == () and (canary.address, canary.port) == ("10.0.0.3", 80)


def test_unready_endpoints_are_skipped_and_clusterip_is_the_fallback() -> None:
    slices = [_slice("web-primary", ["10.1.0.1"], ready=False), _slice("web-canary", ["10.1.0.9"])]
    spec = translate_split(_split("v1alpha2", (50, 50)), SERVICES, slices)
    primary = spec.backends[0].backend
    assert primary.endpoints == () and (primary.address, primary.port) == ("10.0.0.2", 80)


ROUTE_GROUP_HEADERS: list[Any] = [{"x-canary": "always", "user-agent": ".*Firefox.*"}]
ROUTE_GROUP_HEADERS.append([{"x-canary": "always"}, {"user-agent": ".*Firefox.*"}])


@pytest.mark.parametrize("headers", ROUTE_GROUP_HEADERS, ids=["map", "list-of-maps"])
@pytest.mark.parametrize("group_version", ["v1alpha2", "v1alpha4"])
def test_route_group_matches_send_matching_traffic_to_canary(headers: Any, group_version: str) -> None:
    matches = [
        {"name": "canary-users", "pathRegex": "/api/.*", "methods": ["GET", "POST"], "headers": headers}
    ]
    group: dict[str, Any] = {
        "apiVersion": f"specs.smi-spec.io/{group_version}",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "canary-users", "namespace": NS},
    }
    if group_version == "v1alpha2":
        group["matches"] = matches
    else:
        group["spec"] = {"matches": matches}
    split = _split("v1alpha4", (0, 100), matches=[{"kind": "HTTPRouteGroup", "name": "canary-users"}])
    spec = translate_split(split, SERVICES, SLICES, [group])
    assert _weights(spec) == {"web-primary_shop": 0, "web-canary_shop": 0, "web_shop": 100}
    (match,) = spec.matches
    assert match.backend == "web-canary_shop"
    assert match.path_regex == "/api/.*" and match.methods == ("GET", "POST")
    assert {(h.name, h.regex) for h in match.headers} == {
        ("x-canary", "always"),
        ("user-agent", ".*Firefox.*"),
    }
    routes = config.build_route_config("r", [spec])["virtual_hosts"][0]["routes"]
    assert routes[0]["route"]["cluster"] == "web-canary_shop"
    assert {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|POST"}}} in routes[0]["match"][
        "headers"
    ]


POLICY_ABORT = {"httpStatus": 503, "percentage": 20}
POLICY = {
    "apiVersion": f"{MESH_GROUP}/{MESH_VERSION}",
    "kind": TRAFFIC_POLICY_KIND,
    "metadata": {"name": "web", "namespace": NS},
    "spec": {
        "service": "web",
        "mirror": {"backend": "web-canary", "percentage": 50},
        "faults": [
            {
                "backend": "web-canary",
                "delay": {"fixedDelay": "200ms", "percentage": 10},
                "abort": {"httpStatus": 503, "percentage": 20},
            }
        ],
        "timeout": "3s",
        "retries": {"attempts": 3, "perTryTimeout": "1s", "budgetPercent": 25},
        "outlierDetection": {"consecutive5xx": 3, "baseEjectionTime": "1m"},
    },
}


def test_traffic_policy_model_round_trips_camel_case() -> None:
    policy = TrafficPolicy.model_validate(POLICY)
    assert policy.spec.faults[0].abort is not None and policy.spec.faults[0].abort.http_status == 503
    assert policy.model_dump(by_alias=True, exclude_none=True, mode="json")["spec"]["outlierDetection"] == {
        "consecutive5xx": 3,
        "interval": "10s",
        "baseEjectionTime": "1m",
        "maxEjectionPercent": 50,
    }
    with pytest.raises(ValueError):
        TrafficPolicy.model_validate({**POLICY, "spec": {**POLICY["spec"], "timeout": "soon"}})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        TrafficPolicy.model_validate({**POLICY, "spec": {"service": "web", "mirorr": {}}})


def test_policy_adds_mirror_faults_timeouts_retries() -> None:
    (route,) = translate_namespace([_split("v1alpha2", (90, 10)), *SERVICES, *SLICES, POLICY]).routes
    spec = route.spec
    assert spec.mirror == config.Mirror(backend="web-canary_shop", percentage=50)
    fault = spec.faults["web-canary_shop"]
    assert fault.delay == config.FaultDelay(seconds=0.2, percentage=10)
    assert fault.abort == config.FaultAbort(status=503, percentage=20)
    assert spec.timeout == 3 and spec.retries is not None and spec.retries.per_try_timeout == 1
    resources = config.local_resources(spec, "127.0.0.1", 8080, config.ads_source(), "/dev/null")
    clusters = {c["name"]: c for c in resources.clusters}
    assert clusters["web-canary_shop"]["outlier_detection"]["base_ejection_time"] == "60s"
    budget = clusters["web-primary_shop"]["circuit_breakers"]["thresholds"][0]["retry_budget"]
    assert budget["budget_percent"] == {"value": 25.0}
    route = resources.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]
    weighted = {c["name"]: c for c in route["weighted_clusters"]["clusters"]}
    assert "typed_per_filter_config" not in weighted["web-primary_shop"]
    fault_config = weighted["web-canary_shop"]["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault_config["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 200000, "denominator": "MILLION"},
    }
    assert route["timeout"] == "3s" and route["retry_policy"]["num_retries"] == 3
    assert route["request_mirror_policies"][0]["cluster"] == "web-canary_shop"


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="service 'web-missing' not found"):
        translate_split(
            {
                **_split("v1alpha2", (1, 1)),
                "spec": {"service": "web", "backends": [{"service": "web-missing", "weight": 1}]},
            },
            SERVICES,
        )
    with pytest.raises(ValueError, match="at least one backend"):
        translate_split(_split("v1alpha2", (0, 0)), SERVICES, SLICES)
    with pytest.raises(ValueError, match="quantity"):
        parse_weight("lots")


@given(st.integers(min_value=0, max_value=10**6))
def test_milli_quantities_equal_scaled_integers(milli: int) -> None:
    assert parse_weight(f"{milli}m") == Decimal(milli) / 1000
    canary, whole = integer_weights([parse_weight(f"{milli}m"), parse_weight("1")])
    assert canary * 1000 == milli * whole  # same ratio, in integers


def _named(obj: dict[str, Any], name: str, created: str = "", **spec: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": NS, "creationTimestamp": created}
    return {**obj, "metadata": metadata, "spec": {**obj["spec"], **spec}}


def test_one_bad_split_does_not_block_the_others() -> None:
    good = _named(_split("v1alpha2", (90, 10)), "web", "2026-01-01T00:00:00Z")
    # Listed first but younger: the older split keeps the service, whatever the list order.
    twin = _named(_split("v1alpha2", (10, 90)), "web-twin", "2026-02-01T00:00:00Z")
    broken = _named(
        _split("v1alpha2", (1, 1)), "api", service="shop-api", backends=[{"service": "nope", "weight": 1}]
    )
    translation = translate_namespace(
        [twin, good, broken, *SERVICES, _service("shop-api", "10.0.0.5"), *SLICES]
    )
    assert [(r.split.name, _weights(r.spec)) for r in translation.routes] == [
        ("web", {"web-primary_shop": 90, "web-canary_shop": 10})
    ]
    refused = {r.ref.name: r.message for r in translation.refused}
    assert set(refused) == {"web-twin", "api"}
    assert "TrafficSplit web (older) already routes service 'web'" in refused["web-twin"]
    assert "'nope' not found" in refused["api"]


def test_policy_naming_a_service_outside_the_split_adds_it_as_a_backend() -> None:
    """Mirror to a service the split does not name: it joins the route at weight 0."""
    shadow = _service("web-shadow", "10.0.0.7")
    policy = {**POLICY, "spec": {"service": "web", "mirror": {"backend": "web-shadow", "percentage": 5}}}
    (route,) = translate_namespace([_split("v1alpha4", (90, 10)), *SERVICES, shadow, *SLICES, policy]).routes
    assert _weights(route.spec) == {"web-primary_shop": 90, "web-canary_shop": 10, "web-shadow_shop": 0}
    assert route.spec.mirror == config.Mirror(backend="web-shadow_shop", percentage=5)


def test_an_invalid_policy_is_refused_alone_and_the_split_still_routes() -> None:
    missing = {**POLICY, "spec": {"service": "web", "faults": [{"backend": "gone", "abort": POLICY_ABORT}]}}
    translation = translate_namespace([_split("v1alpha4", (70, 30)), *SERVICES, *SLICES, missing])
    (route,) = translation.routes
    assert _weights(route.spec) == {"web-primary_shop": 70, "web-canary_shop": 30} and not route.spec.faults
    ((ref, message),) = [(r.ref, r.message) for r in translation.refused]
    assert (ref.kind, ref.name) == (TRAFFIC_POLICY_KIND, "web") and "service 'gone' not found" in message

    # An older policy wins over a younger one for the same service; the younger is refused.
    older = _named(POLICY, "web-old", "2026-01-01T00:00:00Z")
    younger = _named(POLICY, "web-new", "2026-03-01T00:00:00Z", timeout="9s")
    translation = translate_namespace([_split("v1alpha4", (70, 30)), *SERVICES, *SLICES, younger, older])
    assert translation.routes[0].spec.timeout == 3
    assert [r.ref.name for r in translation.refused] == ["web-new"]


def test_short_names_only_for_the_own_namespace_and_export_to() -> None:
    split = _split("v1alpha4", (90, 10))
    split["metadata"]["annotations"] = {EXPORT_ANNOTATION: "., team-a"}
    (route,) = translate_namespace([split, *SERVICES, *SLICES]).routes
    assert route.export_to == {NS, "team-a"}
    assert route.visible_to(NS) and route.visible_to("team-a") and not route.visible_to("team-b")
    assert {"web", "web:80"} <= set(route.spec_for(NS).hosts)
    assert not {"web", "web:80"} & set(route.spec_for("team-a").hosts)
    assert "web.shop.svc.cluster.local" in route.spec_for("team-a").hosts
    assert parse_export_to("*,team-a", NS) == {"*"}
    with pytest.raises(ValueError, match="not namespace names"):
        parse_export_to("Team_B", NS)
    split["metadata"]["annotations"] = {EXPORT_ANNOTATION: ""}
    (refusal,) = translate_namespace([split, *SERVICES, *SLICES]).refused
    assert EXPORT_ANNOTATION in refusal.message


def test_overlapping_hosts_are_refused_before_envoy_sees_them() -> None:
    backend = config.Backend(name="b", address="127.0.0.1", port=1)
    spec = config.RouteSpec(
        service="a", hosts=("x", "y"), backends=(config.WeightedBackend(backend=backend, weight=1),)
    )
    other = spec.model_copy(update={"service": "c", "hosts": ("y",)})
    with pytest.raises(ValueError, match="'y' is claimed by both 'a' and 'c'"):
        config.build_route_config("r", [spec, other])


@pytest.mark.parametrize(
    ("match", "field", "why"),
    [
        ({"headers": [{"x-user": "(a)\\1"}]}, "headers.x-user.regex", "invalid escape sequence"),
        ({"headers": {"x-user": ""}}, "headers.x-user.regex", "empty regex"),
        ({"pathRegex": "a{1000}"}, "pathRegex", "program size 1004 > 100"),
        ({"methods": ["GET", "PO(ST"]}, "methods.1", "should match pattern"),
    ],
)
def test_a_route_group_envoy_would_refuse_refuses_its_split_alone(
    match: dict[str, Any], field: str, why: str
) -> None:
    group = {
        "apiVersion": "specs.smi-spec.io/v1alpha4",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "testers", "namespace": NS},
        "spec": {"matches": [{"name": "ok", "headers": {"x-user": "^alice$"}}, {"name": "bad", **match}]},
    }
    header_route = _split("v1alpha4", (0, 100), matches=[{"kind": "HTTPRouteGroup", "name": "testers"}])
    other = _named(_split("v1alpha4", (70, 30)), "api", service="shop-api")
    api = _service("shop-api", "10.0.0.5")
    translation = translate_namespace([header_route, group, other, *SERVICES, api, *SLICES])
    assert [r.split.name for r in translation.routes] == ["api"]
    ((ref, message),) = [(r.ref, r.message) for r in translation.refused]
    assert (ref.kind, ref.name) == ("TrafficSplit", "web")
    assert "HTTPRouteGroup testers matches[1]" in message and field in message and why in message
