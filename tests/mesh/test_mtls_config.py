"""Which endpoints get mTLS, and what each namespace's inbound listener accepts.

The Envoy side of these (real sidecars talking mTLS, strict listeners refusing plaintext) is in
tests/netns; here the translation from Pods, EndpointSlices and Namespace labels.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.control import MTLS_LABEL, MeshControlPlane
from canaryctl_mesh.translate import translate_namespace

NS = "shop"


def pod(name: str, ip: str, account: str | None, meshed: bool) -> dict[str, Any]:
    annotations = {config.STATUS_ANNOTATION: "injected"} if meshed else {}
    spec = {"serviceAccountName": account} if account else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": spec,
        "status": {"podIP": ip},
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
    slices = [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-x",
                "namespace": NS,
                "labels": {"kubernetes.io/service-name": service},
            },
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": [ip], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": name}}
                for ip, name in members
            ],
        }
        for service, members in endpoints
    ]
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
