"""Which endpoints get mTLS, and what each namespace's inbound listener accepts.

The Envoy side of these (real sidecars talking mTLS, strict listeners refusing plaintext) is in
tests/netns; here the translation from Pods, EndpointSlices and Namespace labels.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from canaryctl_mesh import config, injector
from canaryctl_mesh.ads import AdsServer, encode
from canaryctl_mesh.control import MTLS_LABEL, MeshControlPlane
from canaryctl_mesh.translate import mesh_peers, translate_namespace

NS = "shop"


UNCAPTURED = ",".join(str(p) for p in injector.uncaptured_inbound_ports(injector.InjectorSettings(), {}))


def pod(name: str, ip: str, account: str | None, meshed: bool, namespace: str = NS) -> dict[str, Any]:
    annotations = (
        {config.STATUS_ANNOTATION: "injected", config.UNCAPTURED_INBOUND_ANNOTATION: UNCAPTURED}
        if meshed
        else {}
    )
    spec = {"serviceAccountName": account} if account else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
        "status": {"podIP": ip, "phase": "Running"},
    }


def endpoint_slice(service: str, members: list[tuple[str, str]], ports: dict[str, int]) -> dict[str, Any]:
    """`service`'s EndpointSlice: ready endpoints (address, pod name) on the named target ports."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-x",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service},
        },
        "ports": [{"name": name, "port": port} for name, port in ports.items()],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": name}}
            for ip, name in members
        ],
    }


def objects() -> list[dict[str, Any]]:
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "clusterIP": f"10.0.0.{index}",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        }
        for index, name in enumerate(("cart", "cart-primary", "cart-canary"), start=1)
    ]
    endpoints = [
        ("cart-primary", [("10.1.0.1", "cart-primary-a"), ("10.1.0.2", "cart-primary-b")]),
        ("cart-canary", [("10.1.0.3", "cart-b")]),
    ]
    slices = [endpoint_slice(service, members, {"http": 8080}) for service, members in endpoints]
    split = {
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": "cart", "namespace": NS},
        "spec": {
            "service": "cart",
            "backends": [{"service": "cart-primary", "weight": 90}, {"service": "cart-canary", "weight": 10}],
        },
    }
    pods = [
        pod("cart-primary-a", "10.1.0.1", "cart", meshed=True),
        pod("cart-primary-b", "10.1.0.2", "cart", meshed=False),  # not meshed yet: plaintext to it
        pod("cart-b", "10.1.0.3", None, meshed=True),  # the namespace's default ServiceAccount
    ]
    return [*services, *slices, split, *pods]


def clusters(mtls: bool) -> dict[str, dict[str, Any]]:
    (route,) = translate_namespace(objects(), mtls=mtls).routes
    return {c["name"]: c for c in config.build_clusters([route.spec])}


def test_meshed_endpoints_get_mtls_expecting_their_service_account() -> None:
    found = clusters(mtls=True)
    primary = found["cart-primary_shop"]
    (match,) = primary["transport_socket_matches"]
    common = match["transport_socket"]["typed_config"]["common_tls_context"]
    sans = common["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert sans == [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/cart"}}]
    assert common["alpn_protocols"] == [config.MTLS_ALPN]
    assert match["match"] == {config.PEER_KEY: "spiffe://cluster.local/ns/shop/sa/cart"}
    metadata = {
        e["endpoint"]["address"]["socket_address"]["address"]: e.get("metadata")
        for e in primary["load_assignment"]["endpoints"][0]["lb_endpoints"]
    }
    assert metadata["10.1.0.1"] == {
        "filter_metadata": {
            config.TRANSPORT_SOCKET_MATCH: {config.PEER_KEY: "spiffe://cluster.local/ns/shop/sa/cart"}
        }
    }
    assert metadata["10.1.0.2"] is None, "an unmeshed pod matches no mTLS socket: the cluster's plaintext"
    assert "transport_socket" not in primary
    (canary_match,) = found["cart-canary_shop"]["transport_socket_matches"]
    assert canary_match["match"] == {config.PEER_KEY: "spiffe://cluster.local/ns/shop/sa/default"}


def test_without_mtls_pods_change_nothing() -> None:
    assert all("transport_socket_matches" not in c for c in clusters(mtls=False).values())


def inbound(plane: MeshControlPlane, namespace: str) -> dict[str, Any]:
    listeners = plane._listeners_of(namespace)
    packed = listeners.entries["inbound"][1]
    assert packed is not None
    listener = listener_pb2.Listener()
    packed.Unpack(listener)
    return dict(json_format.MessageToDict(listener, preserving_proto_field_name=True))


@pytest.mark.asyncio
async def test_each_namespace_picks_its_mode_with_a_label() -> None:
    plane = MeshControlPlane(AdsServer(), mtls=config.PERMISSIVE)
    namespaces = {
        name: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        for name, labels in (
            ("vault", {MTLS_LABEL: "strict"}),
            ("legacy", {}),
            ("typo", {MTLS_LABEL: "strickt"}),
        )
    }
    plane.update({name: [namespace] for name, namespace in namespaces.items()})
    strict = inbound(plane, "vault")
    assert [c["name"] for c in strict["filter_chains"]] == ["inbound-mtls", "inbound-mtls-tcp"]
    assert "default_filter_chain" not in strict, "strict: no plaintext, no passthrough"
    for chain in strict["filter_chains"]:
        assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
    for name in ("legacy", "typo"):
        permissive = inbound(plane, name)
        assert [c["name"] for c in permissive["filter_chains"]] == [
            "inbound-mtls",
            "inbound-mtls-tcp",
            "inbound-http",
        ]
        assert permissive["default_filter_chain"]["name"] == "inbound-tcp"
    await plane.push()
    assert [(r.ref.kind, r.ref.name) for r in plane.refused] == [("Namespace", "typo")]
    assert "strickt" in plane.refused[0].message and "kept permissive" in plane.refused[0].message
    with pytest.raises(ValueError, match="mTLS mode"):
        MeshControlPlane(AdsServer(), mtls="on")


CART, DEFAULT = "spiffe://cluster.local/ns/shop/sa/cart", "spiffe://cluster.local/ns/shop/sa/default"


def test_pass_through_peers_are_running_meshed_pods_and_services_of_them_only() -> None:
    own_and_server_first = tuple(sorted({*config.SidecarPorts().own(), *config.DEFAULT_SERVER_FIRST_PORTS}))
    unmeshed_by_policy = pod("locked", "10.1.0.4", "cart", meshed=True)
    unmeshed_by_policy["metadata"]["annotations"][config.STATUS_ANNOTATION] = "not meshed: Pod Security"
    finished = pod("job", "10.1.0.5", "cart", meshed=True)
    finished["status"]["phase"] = "Succeeded"  # its IP may belong to another pod by now
    older = pod("older", "10.1.0.6", "cart", meshed=True)
    del older["metadata"]["annotations"][config.UNCAPTURED_INBOUND_ANNOTATION]  # meshed before it was told
    excluding = pod("excluding", "10.1.0.7", "cart", meshed=True)
    excluding["metadata"]["annotations"][config.UNCAPTURED_INBOUND_ANNOTATION] = UNCAPTURED + ",9200"
    peers = mesh_peers([*objects(), unmeshed_by_policy, finished, older, excluding], routed=["10.0.0.3"])
    assert peers == (
        # cart-canary's ClusterIP: its one endpoint is meshed (cart-primary has an unmeshed one; the
        # apex cart no endpoints); its HTTP goes through the routing table when it is routed.
        config.Peer("10.0.0.3", (DEFAULT,), (), routed=True, service_ports=(80,)),
        config.Peer("10.1.0.1", (CART,), own_and_server_first),
        config.Peer("10.1.0.3", (DEFAULT,), own_and_server_first),
        config.Peer("10.1.0.7", (CART,), tuple(sorted({*own_and_server_first, 9200}))),
    )
    # A pod the injector left unmeshed (it says why in the annotation) gets plaintext when routed too.
    routed_objects = objects()
    left_out = next(o for o in routed_objects if o["metadata"]["name"] == "cart-primary-b")
    left_out["metadata"]["annotations"] = {config.STATUS_ANNOTATION: "not meshed: Pod Security"}
    (route,) = translate_namespace(routed_objects, mtls=True).routes
    assert route.spec.backends[0].backend.peers == (("10.1.0.1", CART),)


def test_a_service_port_stays_plaintext_where_its_target_port_is_not_captured() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {
            "clusterIP": "10.0.0.9",
            "ports": [
                {"name": "tcp-db", "port": 5432, "targetPort": 5432},
                {"name": "metrics", "port": 9090, "targetPort": 15090},  # the sidecar's own port
                {"name": "mysql", "port": 3307, "targetPort": 3306},  # server-first
            ],
        },
    }
    members = [("10.1.0.8", "db-0"), ("10.1.0.9", "db-1")]
    slice_ = endpoint_slice("db", members, {"tcp-db": 5432, "metrics": 15090, "mysql": 3306})
    pods = [pod("db-0", "10.1.0.8", "db", meshed=True), pod("db-1", "10.1.0.9", "db-admin", meshed=True)]
    (cluster_ip,) = [p for p in mesh_peers([service, slice_, *pods]) if p.address == "10.0.0.9"]
    assert cluster_ip.identities == (
        "spiffe://cluster.local/ns/shop/sa/db",
        "spiffe://cluster.local/ns/shop/sa/db-admin",
    )
    assert cluster_ip.plaintext_ports == (3307, 9090)
    assert cluster_ip.service_ports == (3307, 5432, 9090)
    assert not cluster_ip.wrapped_on(15090), "a port it does not serve: no chains for it there"
    assert cluster_ip.wrapped_on(5432) and not cluster_ip.wrapped_on(3307)


def listener(plane: MeshControlPlane, namespace: str, name: str) -> dict[str, Any]:
    packed = plane._listeners_of(namespace).entries[name][1]
    assert packed is not None
    parsed = listener_pb2.Listener()
    packed.Unpack(parsed)
    return dict(json_format.MessageToDict(parsed, preserving_proto_field_name=True))


def peer_addresses(plane: MeshControlPlane, namespace: str) -> set[str]:
    outbound = listener(plane, namespace, "outbound")
    return {
        r["address_prefix"]
        for chain in outbound["filter_chains"]
        for r in chain.get("filter_chain_match", {}).get("prefix_ranges", [])
    }


def test_peers_reach_the_views_their_namespace_exports_to() -> None:
    other = [pod("api-0", "10.2.0.1", "api", meshed=True, namespace="team-b")]
    everywhere = MeshControlPlane(AdsServer(), mtls=config.PERMISSIVE)
    everywhere.update(
        {NS: objects(), "team-b": other, "team-c": [pod("x", "10.3.0.1", None, False, "team-c")]}
    )
    assert peer_addresses(everywhere, "team-c") == {"10.1.0.1", "10.1.0.3", "10.0.0.3", "10.2.0.1"}
    (cart_tcp,) = [
        c for c in everywhere._view("team-c")[config.CLUSTER_TYPE].entries if c == "mtls-tcp:shop/sa/cart"
    ]
    assert cart_tcp
    # Exported to their own namespace only: another tenant's sidecars learn nothing of them.
    own = MeshControlPlane(AdsServer(), mtls=config.PERMISSIVE, default_export_to=frozenset({""}))
    own.update({NS: objects(), "team-b": other, "team-c": [pod("x", "10.3.0.1", None, False, "team-c")]})
    assert peer_addresses(own, "team-b") == {"10.2.0.1"}
    assert peer_addresses(own, NS) == {"10.1.0.1", "10.1.0.3", "10.0.0.3"}
    assert own._listeners_of("team-c") is own._default_listeners
    assert not [c for c in own._view("team-c")[config.CLUSTER_TYPE].entries if c.startswith("mtls-")]
    # Without mTLS nothing is wrapped.
    plain = MeshControlPlane(AdsServer())
    plain.update({NS: objects()})
    assert peer_addresses(plain, NS) == set()


def test_strict_destinations_get_mtls_on_server_first_ports_too() -> None:
    """A permissive destination does not look for a ClientHello on server-first ports (a plaintext
    client would wait there for a server waiting for it), so callers leave those ports alone; a strict
    one serves no plaintext client and looks on every port, so callers wrap them too."""
    strict = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {MTLS_LABEL: "strict"}},
    }
    for namespace_objects, wrapped in (([], False), ([strict], True)):
        plane = MeshControlPlane(AdsServer(), mtls=config.PERMISSIVE)
        plane.update({NS: [*objects(), *namespace_objects]})
        (pod_peer,) = [p for p in plane._peer_sets[plane._visible_peers(NS)] if p.address == "10.1.0.1"]
        assert pod_peer.wrapped_on(3306) is wrapped and pod_peer.wrapped_on(5432)
        inspector = listener(plane, NS, "inbound")["listener_filters"][1]
        assert inspector["name"] == "envoy.filters.listener.tls_inspector"
        skipped = str(inspector.get("filter_disabled"))
        assert ("3306" not in skipped) is wrapped and "5432" not in skipped


def test_listeners_with_peers_encode_exactly_as_json_format_does() -> None:
    """The control plane parses filter chains once and sets their address ranges directly; what it
    sends must be the very bytes (and version) a plain parse of the listeners gives."""
    plane = MeshControlPlane(AdsServer(), mtls=config.PERMISSIVE)
    plane.update({NS: objects()})
    fast = plane._listeners_of(NS)
    plain = encode(config.LISTENER_TYPE, plane._capture_listeners(*plane._listener_key(NS)))
    assert peer_addresses(plane, NS)
    assert fast.version == plain.version
    for name, (_, packed) in plain.entries.items():
        assert packed is not None and fast.entries[name][1] == packed, name
