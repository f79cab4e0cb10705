"""TrafficTargets through meshd's control plane: watched from kmock's API, translated, and sent to the
sidecars of the destination's ServiceAccount only, as their own inbound listener.

Sidecars are raw delta-ADS clients whose bearer tokens stand for proven identities (TokenReview
itself is tested in test_security.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import kmock
import pytest
import pytest_asyncio
import yaml
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import json_format
from kubernetes import client

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.identity import Identity, Unauthenticated
from canaryctl_mesh.kube import KINDS, KubeObjects
from canaryctl_mesh.meshd.control_plane import EVENT_REASON, ControlPlane
from canaryctl_mesh.meshd.watch import WATCHED
from tests.mesh.delta_client import DeltaClient, unpack
from tests.meshd.conftest import NS

RBAC_RULES = yaml.safe_load((Path(__file__).parents[2] / "charts/canaryctl/files/rbac.yaml").read_text())
IDENTITIES = {"token-api": Identity(NS, "api", "api-1"), "token-web": Identity(NS, "web", "web-1")}


class Tokens:
    """Stands in for TokenReview: each known token proves one identity."""

    async def authenticate(self, metadata: Mapping[str, str]) -> Identity:
        identity = IDENTITIES.get(metadata.get("authorization", "").removeprefix("Bearer "))
        if identity is None:
            raise Unauthenticated("unknown token")
        return identity


@pytest_asyncio.fixture
async def plane(kube_api: client.ApiClient) -> AsyncIterator[ControlPlane]:
    ads = AdsServer("127.0.0.1", 0, authenticator=Tokens())
    ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=0)
    async with ControlPlane(kube_api, [NS], ports=ports, bind_host="127.0.0.1", ads=ads) as running:
        yield running


class Sidecar(DeltaClient):
    def __init__(self, port: int, token: str) -> None:
        identity = IDENTITIES[token]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        super().__init__(
            channel, f"{identity.pod}.{identity.namespace}", (("authorization", f"Bearer {token}"),)
        )
        self.subscribe(config.ROUTE_TYPE, [config.INBOUND_ROUTE_NAME])
        self.inbound: route_pb2.RouteConfiguration | None = None

    async def inbound_policies(self, wanted: Any, timeout: float = 10.0) -> dict[str, Any] | None:
        """The RBAC policies of the inbound route configuration (None when it enforces none) once
        `wanted` accepts them: the control plane's watches may still be taking in what the test applied."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self.inbound is not None:
                seen = _policies(self.inbound)
                if wanted(seen):
                    return seen
            try:
                response = await self.receive(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            self.ack(response)
            found = unpack(response, route_pb2.RouteConfiguration).get(config.INBOUND_ROUTE_NAME)
            self.inbound = found or self.inbound
        raise AssertionError(f"inbound RBAC policies {seen} never became what the test wanted")


def _policies(routes: route_pb2.RouteConfiguration) -> dict[str, Any] | None:
    (host,) = routes.virtual_hosts
    if "envoy.filters.http.rbac" not in host.typed_per_filter_config:
        return None
    per_route = rbac_pb2.RBACPerRoute()
    host.typed_per_filter_config["envoy.filters.http.rbac"].Unpack(per_route)
    return dict(json_format.MessageToDict(per_route)["rbac"]["rules"].get("policies", {}))


def route_group() -> dict[str, Any]:
    return {
        "apiVersion": "specs.smi-spec.io/v1alpha3",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "api-routes", "namespace": NS},
        "spec": {"matches": [{"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]}]},
    }


def target(name: str, destination_namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "access.smi-spec.io/v1alpha2",
        "kind": "TrafficTarget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "destination": {"kind": "ServiceAccount", "name": "api", "namespace": destination_namespace},
            "rules": [{"kind": "HTTPRouteGroup", "name": "api-routes"}],
            "sources": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}],
        },
    }


@pytest.mark.asyncio
async def test_the_destinations_sidecars_alone_get_its_authorization_and_lose_it_with_the_target(
    plane: ControlPlane, objects: KubeObjects, emulator: kmock.KubernetesEmulator
) -> None:
    api, web = Sidecar(plane.ads.port, "token-api"), Sidecar(plane.ads.port, "token-web")
    try:
        assert await api.inbound_policies(lambda p: p is None) is None  # no target: open, as before
        await objects.apply(route_group())
        await objects.apply(target("metrics"))
        policies = await api.inbound_policies(lambda p: p is not None)
        assert policies is not None
        assert policies["metrics"]["principals"] == [
            {
                "authenticated": {
                    "principalName": {"exact": "spiffe://cluster.local/ns/monitoring/sa/prometheus"}
                }
            }
        ]
        assert await web.inbound_policies(lambda p: p is None) is None  # another ServiceAccount: untouched

        # A target reaching into another namespace is refused alone, with an Event; api keeps its policy.
        await objects.apply(target("foreign", destination_namespace="bank"))
        deadline = time.monotonic() + 10
        while not any(r.ref.name == "foreign" for r in plane.refused) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        (refusal,) = [r for r in plane.refused if r.ref.name == "foreign"]
        assert "own namespace" in refusal.message
        while time.monotonic() < deadline:
            events = [o.raw for k, o in emulator.objects.items() if k[0] == "v1/events" and not o.deleted]
            if any(e["involvedObject"]["name"] == "foreign" and e["reason"] == EVENT_REASON for e in events):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no Event on the refused TrafficTarget")
        assert set(await api.inbound_policies(lambda p: p is not None) or {}) == {"metrics"}

        # The last target selecting api gone: its sidecars fall back to the namespace's open listener.
        await objects.delete("access.smi-spec.io/v1alpha2", "TrafficTarget", NS, "metrics")
        assert await api.inbound_policies(lambda p: p is None) is None
    finally:
        await api.close()
        await web.close()


def test_the_charts_role_lets_meshd_list_and_watch_every_kind_it_watches() -> None:
    """Without list and watch a reflector gets 403 for ever, and the control plane never pushes."""
    granted = {
        (group, resource)
        for rule in RBAC_RULES["meshControlPlane"]["namespaced"]
        if {"list", "watch"} <= set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    watched = {(api.rpartition("/")[0], KINDS[api, kind].plural) for api, kind in WATCHED}
    assert ("access.smi-spec.io", "traffictargets") in watched
    assert watched <= granted, watched - granted
