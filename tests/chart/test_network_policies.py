"""The chart's NetworkPolicies, evaluated on the rendered pods.

Who may connect to whom is decided here the way the NetworkPolicy API defines it (networking.k8s.io/v1:
a pod selected by a policy of a direction accepts only what some rule of some selecting policy
allows; an empty or missing ``from``/``to`` is every peer, missing ``ports`` every port; a named port
resolves on the destination pod; a peer without ``namespaceSelector`` is the policy's namespace;
``ipBlock`` is for addresses outside the cluster), against the Deployments the same render made, so a
label, port name or namespace that drifts apart breaks a test. Every namespace carries
``kubernetes.io/metadata.name``, as the API server sets it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.chart.conftest import NAMESPACE, Manifest

Render = Callable[[str], list[Manifest]]
API_SERVER = "172.18.0.2"
METADATA = "169.254.169.254"
# The cloud metadata services (AWS/GCP/Azure, ECS tasks, Alibaba, AWS over IPv6) and link-local at large.
METADATA_ADDRESSES = (METADATA, "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "fe80::1")


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace set) or an address outside the cluster (ip set)."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None


def pod(
    namespace: str, labels: dict[str, str] | None = None, namespace_labels: dict[str, str] | None = None
) -> Endpoint:
    ns_labels = {"kubernetes.io/metadata.name": namespace} | (namespace_labels or {})
    return Endpoint(namespace, labels or {"app": "anything"}, ns_labels)


def outside(ip: str) -> Endpoint:
    return Endpoint(ip=ip)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        excepted = [ipaddress.ip_network(c) for c in peer["ipBlock"].get("except") or []]
        return (
            address.version == block.version
            and address in block
            and not any(address in e for e in excepted if e.version == address.version)
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def port_matches(rule: dict[str, Any], port: int, named: dict[str, int]) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any((named.get(p["port"]) if isinstance(p["port"], str) else p["port"]) == port for p in ports)


def allowed(manifests: list[Manifest], source: Endpoint, destination: Endpoint, port: int) -> bool:
    """Whether a TCP connection from ``source`` to ``destination:port`` passes both ends' policies."""
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]

    def side(owner: Endpoint, direction: str, peer: Endpoint, named: dict[str, int]) -> bool:
        if owner.namespace is None:
            return True  # outside the cluster: no policy of ours
        selecting = [
            p
            for p in policies
            if p["metadata"]["namespace"] == owner.namespace
            and selects(p["spec"]["podSelector"], owner.labels)
            and direction in p["spec"]["policyTypes"]
        ]
        if not selecting:
            return True
        key = "from" if direction == "Ingress" else "to"
        return any(
            (not rule.get(key) or any(peer_matches(x, p["metadata"]["namespace"], peer) for x in rule[key]))
            and port_matches(rule, port, named)
            for p in selecting
            for rule in p["spec"].get(direction.lower()) or []
        )

    return side(source, "Egress", destination, destination.ports) and side(
        destination, "Ingress", source, destination.ports
    )


def component(manifests: list[Manifest], name: str, namespace: str = NAMESPACE) -> Endpoint:
    """The pod a rendered Deployment makes: its labels, its named container ports."""
    (deployment,) = [
        m
        for m in manifests
        if m["kind"] == "Deployment"
        and m["metadata"]["name"] == name
        and m["metadata"]["namespace"] == namespace
    ]
    template = deployment["spec"]["template"]
    ports = {
        p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
    }
    return Endpoint(
        namespace, template["metadata"]["labels"], {"kubernetes.io/metadata.name": namespace}, ports
    )


@pytest.mark.parametrize("values", ["default", "loadtester-per-namespace", "everything", "no-controller"])
def test_each_policy_selects_exactly_its_component(render: Render, values: str) -> None:
    manifests = render(values)
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert policies
    for policy in policies:
        namespace = policy["metadata"]["namespace"]
        selected = [
            d["metadata"]["name"]
            for d in deployments
            if d["metadata"]["namespace"] == namespace
            and selects(policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected == [policy["metadata"]["name"]], f"{values}: {namespace}/{policy['metadata']['name']}"
        target = component(manifests, selected[0], namespace)
        for rule in policy["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                assert port["port"] in target.ports, f"{selected[0]} has no port {port['port']}"
    covered = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies}
    expected = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in deployments}
    assert covered == expected


def test_the_shared_load_tester_takes_calls_from_the_controller_only(render: Render) -> None:
    manifests = render("default")
    tester = component(manifests, "canaryctl-loadtester")
    http = tester.ports["http"]
    assert allowed(manifests, component(manifests, "canaryctl"), tester, http)
    for caller in (
        pod("team-a"),
        pod(NAMESPACE),
        component(manifests, "canaryctl-mesh"),
        outside("10.1.2.3"),
    ):
        assert not allowed(manifests, caller, tester, http), caller
    # Load tests reach workloads in other namespaces and the internet, never canaryctl's own pods or
    # the cloud metadata service; DNS works.
    assert allowed(manifests, tester, pod("team-a"), 9898)
    assert allowed(manifests, tester, outside("203.0.113.7"), 443)
    assert allowed(manifests, tester, outside("2001:db8::7"), 443)
    assert allowed(manifests, tester, outside("10.96.0.10"), 53)
    for target, port in (
        (component(manifests, "canaryctl"), 8080),
        (component(manifests, "canaryctl-mesh"), 15010),
        (component(manifests, "canaryctl-injector"), 9443),
        *((outside(address), 80) for address in METADATA_ADDRESSES),
    ):
        assert not allowed(manifests, tester, target, port), target


def test_the_controller_reaches_anything_but_link_local_and_metadata_addresses(render: Render) -> None:
    """A tenant's metric, webhook or alert address must not reach the node's cloud credentials: the
    controller refuses them after DNS, and its NetworkPolicy does too for anything else in its pod."""
    manifests = render("default")
    controller = component(manifests, "canaryctl")
    tester = component(manifests, "canaryctl-loadtester")
    assert allowed(manifests, controller, tester, tester.ports["http"])
    for target, port in (
        (pod("team-a"), 9090),
        (outside("203.0.113.7"), 443),
        (outside("2001:db8::7"), 443),
        (outside(API_SERVER), 6443),
        (outside("10.96.0.10"), 53),
        (outside("169.254.20.10"), 53),  # NodeLocal DNSCache listens on a link-local address
    ):
        assert allowed(manifests, controller, target, port), target
    for address in METADATA_ADDRESSES:
        assert not allowed(manifests, controller, outside(address), 80), address


def test_peers_the_installer_names_may_call_the_load_tester(render: Render) -> None:
    manifests = render("loadtester-token")
    tester = component(manifests, "canaryctl-loadtester")
    monitoring = pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert allowed(manifests, monitoring, tester, tester.ports["http"])
    assert not allowed(manifests, pod("team-a"), tester, tester.ports["http"])


def test_a_per_namespace_load_tester_serves_its_namespace(render: Render) -> None:
    manifests = render("loadtester-per-namespace")
    team_a = component(manifests, "canaryctl-loadtester", "team-a")
    http = team_a.ports["http"]
    assert allowed(manifests, component(manifests, "canaryctl"), team_a, http)
    assert allowed(manifests, pod("team-a"), team_a, http)
    assert allowed(manifests, pod("ci"), team_a, http)  # loadtester.networkPolicy.from
    assert not allowed(manifests, pod("team-b"), team_a, http)
    # loadtester.networkPolicy.to replaces the default targets; TokenReview reaches the API server.
    assert allowed(manifests, team_a, pod("shop", namespace_labels={"team": "a"}), 8080)
    assert not allowed(manifests, team_a, pod("shop"), 8080)
    assert not allowed(manifests, team_a, outside("203.0.113.7"), 443)
    assert allowed(manifests, team_a, outside(API_SERVER), 6443)
    assert not allowed(manifests, team_a, outside("172.18.0.3"), 6443)


@pytest.mark.parametrize("values", ["default", "everything", "mesh-only"])
def test_the_mesh_takes_sidecars_and_the_api_server_only(render: Render, values: str) -> None:
    manifests = render(values)
    fullname = "delivery" if values == "everything" else "canaryctl"
    inject = "on" if values == "everything" else "enabled"
    mesh = component(manifests, f"{fullname}-mesh")
    injector = component(manifests, f"{fullname}-injector")
    xds, webhook = mesh.ports["grpc-xds"], injector.ports["https-webhook"]
    meshed = pod("shop", namespace_labels={"mesh.canaryctl.dev/inject": inject})
    assert allowed(manifests, meshed, mesh, xds)
    assert not allowed(manifests, pod("shop"), mesh, xds)  # a namespace the injector does not mesh
    opted_in = pod("shop", labels={"app": "web", "mesh.canaryctl.dev/inject": "true"})
    assert allowed(manifests, opted_in, mesh, xds)  # meshed by its own label (the second webhook)
    assert not allowed(manifests, meshed, mesh, 8080)
    # The API server's address cannot be selected: the webhook port is open to any source, only it.
    assert allowed(manifests, outside(API_SERVER), injector, webhook)
    assert not allowed(manifests, pod("team-a"), injector, 8080)
    for owner in (mesh, injector):
        assert allowed(manifests, owner, outside(API_SERVER), 6443)
        assert allowed(manifests, owner, outside("10.96.0.10"), 53)
        assert not allowed(manifests, owner, outside("203.0.113.7"), 443 if values == "everything" else 80)
        assert not allowed(manifests, owner, pod("team-a"), 8080)


def test_network_policies_can_be_left_out(render: Render) -> None:
    assert not [m for m in render("loadtester-own-hashes") if m["kind"] == "NetworkPolicy"]


def test_only_the_named_peers_scrape_the_mesh(render: Render) -> None:
    """networkPolicy.metricsFrom names Prometheus: it alone reaches meshd's metrics port; unnamed, nobody."""
    prometheus = pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    named, default = render("loadtester-token"), render("default")
    for name in ("canaryctl-mesh", "canaryctl-injector"):
        target = component(named, name)
        metrics = target.ports["http-metrics"]
        assert allowed(named, prometheus, target, metrics), name
        assert not allowed(named, pod("team-a"), target, metrics), name
        assert not allowed(default, prometheus, component(default, name), metrics), name
