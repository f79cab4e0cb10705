"""The pure config builder: validation and the Envoy shapes both delivery paths rely on."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl_mesh import config, protocols, telemetry
from canaryctl_mesh.ads import encode


def _wb(name: str, weight: int, address: str = "127.0.0.1") -> config.WeightedBackend:
    return config.WeightedBackend(
        backend=config.Backend(name=name, address=address, port=8080), weight=weight
    )


def test_route_spec_refuses_references_to_unknown_backends() -> None:
    backends = (_wb("p", 90), _wb("c", 10))
    with pytest.raises(ValueError, match=r"unknown backends \['x'\]"):
        config.RouteSpec(service="s", backends=backends, mirror=config.Mirror(backend="x", percentage=5))
    with pytest.raises(ValueError, match="unknown backends"):
        config.RouteSpec(service="s", backends=backends, faults={"x": config.Fault()})
    with pytest.raises(ValueError, match="unknown backends"):
        config.RouteSpec(service="s", backends=backends, matches=(config.HttpMatch(backend="x"),))
    with pytest.raises(ValueError, match="repeat"):
        config.RouteSpec(service="s", backends=(_wb("p", 1), _wb("p", 1)))
    with pytest.raises(ValueError, match="exactly one"):
        config.HeaderMatch(name="x", exact="a", regex="b")


def test_routes_clusters_and_listener_shapes() -> None:
    spec = config.RouteSpec(
        service="s",
        backends=(_wb("p", 90), _wb("c", 10, address="c.ns.svc.cluster.local")),
        mirror=config.Mirror(backend="c", percentage=12.5),
        faults={"c": config.Fault(delay=config.FaultDelay(seconds=0.25, percentage=1))},
        timeout=1.5,
    )
    resources = config.local_resources(spec, "127.0.0.1", 9000, config.ads_source(), "/dev/null")
    clusters = {c["name"]: c for c in resources.clusters}
    assert clusters["p"]["type"] == "STATIC" and clusters["c"]["type"] == "STRICT_DNS"
    (vhost,) = resources.routes[0]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    route = vhost["routes"][-1]["route"]
    assert route["timeout"] == "1.5s"
    assert route["request_mirror_policies"][0]["runtime_fraction"]["default_value"] == {
        "numerator": 125000,
        "denominator": "MILLION",
    }
    canary = route["weighted_clusters"]["clusters"][1]
    assert canary["typed_per_filter_config"][config.FAULT_FILTER]["delay"]["fixed_delay"] == "0.25s"
    hcm = resources.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [config.FAULT_FILTER, "envoy.filters.http.router"]
    assert {log["name"] for log in hcm["access_log"]} == {
        "envoy.access_loggers.file",
        "envoy.access_loggers.stats",
    }
    assert list(resources.by_type()) == list(config.TYPE_ORDER)


def test_bootstraps() -> None:
    ads = config.ads_bootstrap("node", "127.0.0.1", 18000)
    assert ads["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"] is True
    assert ads["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    local = config.local_bootstrap("node", "/tmp/x")
    source = local["dynamic_resources"]["cds_config"]["path_config_source"]
    assert source == {"path": "/tmp/x/cds.json", "watched_directory": {"path": "/tmp/x"}}
    assert local["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}


@st.composite
def route_specs(draw: st.DrawFn) -> config.RouteSpec:
    names = draw(st.lists(st.sampled_from(["p", "c", "m"]), min_size=1, max_size=3, unique=True))
    weights = draw(st.lists(st.integers(0, 1000), min_size=len(names), max_size=len(names)))
    if not any(weights):
        weights[0] = 1
    backends = tuple(_wb(n, w) for n, w in zip(names, weights, strict=True))
    pct = st.floats(0, 100, allow_nan=False)
    fault = st.builds(
        config.Fault,
        delay=st.none() | st.builds(config.FaultDelay, seconds=st.floats(0.001, 10), percentage=pct),
        abort=st.none() | st.builds(config.FaultAbort, status=st.integers(200, 599), percentage=pct),
    )
    header = st.builds(config.HeaderMatch, name=st.just("x-user"), exact=st.text("abc", min_size=1))
    match = st.builds(
        config.HttpMatch,
        backend=st.sampled_from(names),
        headers=st.lists(header, max_size=2).map(tuple),
        methods=st.lists(st.sampled_from(["GET", "post"]), max_size=2).map(tuple),
    )
    return config.RouteSpec(
        service="s",
        backends=backends,
        mirror=draw(st.none() | st.builds(config.Mirror, backend=st.sampled_from(names), percentage=pct)),
        faults=draw(st.dictionaries(st.sampled_from(names), fault, max_size=2)),
        matches=tuple(draw(st.lists(match, max_size=2))),
        timeout=draw(st.none() | st.floats(0, 60)),
        retries=draw(st.none() | st.builds(config.Retries, per_try_timeout=st.none() | st.floats(0.01, 5))),
    )


@settings(max_examples=60, deadline=None)
@given(route_specs())
def test_every_spec_builds_resources_envoy_protos_accept(spec: config.RouteSpec) -> None:
    """The ADS server parses each resource into Envoy's protobufs; nothing the builder emits may fail."""
    resources = config.local_resources(spec, "127.0.0.1", 1, config.ads_source(), "/dev/null")
    for type_url, items in [
        *resources.by_type().items(),
        *config.sidecar_resources([spec]).by_type().items(),
    ]:
        encoded = encode(type_url, items)
        assert len(encoded.entries) == len(items)
    route = resources.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]
    assert [c["weight"] for c in route["weighted_clusters"]["clusters"]] == [
        wb.weight for wb in spec.backends
    ]


def _listener(resources: config.Resources, name: str) -> dict[str, Any]:
    listener: dict[str, Any] = next(item for item in resources.listeners if item["name"] == name)
    return listener


def test_sidecar_listeners_route_http_and_pass_everything_else_through() -> None:
    spec = config.RouteSpec(service="s", backends=(_wb("p", 1),))
    resources = config.sidecar_resources([spec], opaque_ports=(25, 3306))
    for name, cluster in (("outbound", config.PASSTHROUGH_CLUSTER), ("inbound", config.INBOUND_CLUSTER)):
        listener = _listener(resources, name)
        filters = [f["name"] for f in listener["listener_filters"]]
        assert filters == [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.tls_inspector",
            "envoy.filters.listener.http_inspector",
        ]
        skipped = listener["listener_filters"][2]["filter_disabled"]["or_match"]["rules"]
        assert [r["destination_port_range"] for r in skipped] == [
            {"start": 25, "end": 26},
            {"start": 3306, "end": 3307},
        ]
        (http,) = listener["filter_chains"]
        assert http["filter_chain_match"]["application_protocols"] == ["http/1.0", "http/1.1", "h2c"]
        hcm = http["filters"][0]["typed_config"]
        assert hcm["upgrade_configs"] == [{"upgrade_type": "websocket"}]
        tcp = listener["default_filter_chain"]["filters"][0]["typed_config"]
        assert tcp["cluster"] == cluster
        assert listener["continue_on_listener_filters_timeout"] is True
    inbound_hcm = _listener(resources, "inbound")["filter_chains"][0]["filters"][0]["typed_config"]
    stats = inbound_hcm["access_log"][1]["typed_config"]
    assert stats["stat_prefix"] == telemetry.INBOUND_STATS_PREFIX
    clusters = {c["name"]: c for c in resources.clusters}
    for name in ("p", config.PASSTHROUGH_CLUSTER, config.INBOUND_CLUSTER):
        options = clusters[name]["typed_extension_protocol_options"][config.HTTP_OPTIONS_KEY]
        assert "use_downstream_protocol_config" in options, name
    route = resources.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]
    assert route["timeout"] == "0s", "no route timeout unless the user sets one"


def test_services_declare_opaque_ports_by_app_protocol_or_name() -> None:
    def service(*ports: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "Service", "spec": {"ports": list(ports)}}

    objects = [
        service({"name": "mysql", "port": 3307, "targetPort": 13306}),
        service({"name": "tcp-echo", "port": 9000}),
        service({"name": "db", "port": 7000, "appProtocol": "postgresql"}),
        service({"name": "http-api", "port": 8080}, {"name": "grpc", "port": 9090}),
        service({"name": "web", "port": 8081, "appProtocol": "kubernetes.io/h2c"}),
        service({"name": "https", "port": 443}, {"name": "dns", "port": 53, "protocol": "UDP"}),
        service({"port": 7001}, {"name": "api", "port": 7002}, {"name": "metrics-tcp", "port": 7003}),
        {"kind": "ConfigMap", "spec": {"ports": [{"name": "tcp", "port": 1}]}},
    ]
    opaque = protocols.opaque_ports(objects)
    assert {3307, 13306, 9000, 7000} <= set(opaque)
    assert not {8080, 9090, 8081, 443, 53, 7001, 7002, 7003, 1} & set(opaque), "names that declare nothing"
    assert set(config.DEFAULT_OPAQUE_PORTS) <= set(opaque)
