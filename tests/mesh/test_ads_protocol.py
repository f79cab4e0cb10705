"""The delta ADS server's bookkeeping seen by a real gRPC client: ordering, differences only, ACK,
NACK, stale nonces, make-before-break cluster removal and resuming after a reconnect."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import any_pb2
from pytest import MonkeyPatch

from canaryctl_mesh import ads as ads_module
from canaryctl_mesh import config
from canaryctl_mesh.ads import (
    MAX_CACHED_RESTRICTIONS,
    MAX_ERROR_MESSAGE,
    MAX_RESOURCE_NAME,
    MAX_SUBSCRIBED_NAMES,
    VIRTUAL_HOST_TYPE,
    AdsServer,
    TypeSnapshot,
)
from tests.mesh.delta_client import DeltaClient, unpack
from tests.mesh.objects import meshed_service

CDS, LDS, RDS = config.CLUSTER_TYPE, config.LISTENER_TYPE, config.ROUTE_TYPE


def _resources(port: int, timeout: str = "15s", *backends: str) -> config.Resources:
    weighted = tuple(
        config.WeightedBackend(backend=config.Backend(name=name, address="127.0.0.1", port=port), weight=1)
        for name in backends or ("web-primary",)
    )
    spec = config.RouteSpec(service="web", backends=weighted)
    resources = config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")
    resources.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]["timeout"] = timeout
    return resources


def _names(response: Any) -> list[str]:
    return [resource.name for resource in response.resources]


async def _subscribed(ads: AdsServer, node: str = "n1") -> DeltaClient:
    """A client that subscribed to clusters, listeners and the `local` route and ACKed the first push."""
    client = DeltaClient.insecure(ads.port, node)
    client.subscribe(CDS)
    client.subscribe(LDS)
    client.subscribe(RDS, ["local"])
    for expected in (CDS, LDS, RDS):
        response = await client.receive()
        assert response.type_url == expected, "clusters, then listeners, then routes"
        client.ack(response)
    await ads.wait_acked(node)
    return client


def test_a_change_sends_only_what_changed_in_order_and_a_nack_changes_nothing() -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000))
            client = await _subscribed(ads)

            # Only the route changes: one RDS response with the one route, nothing else.
            await ads.set_snapshot("n1", _resources(1000, "7s"))
            rds = await client.receive()
            assert (rds.type_url, _names(rds), list(rds.removed_resources)) == (RDS, ["local"], [])
            client.ack(rds)
            await ads.wait_acked("n1")
            assert await client.nothing_within(0.2)

            # Clusters and routes both change: the routes wait until the clusters are ACKed.
            await ads.set_snapshot("n1", _resources(2000, "8s"))
            cds = await client.receive()
            assert cds.type_url == CDS and _names(cds) == ["web-primary"]
            assert await client.nothing_within(0.3), "routes were sent before the clusters were acknowledged"

            # A stale nonce (answering the RDS response) is ignored; a NACK is recorded, routes are not
            # sent, and the node keeps counting as holding the last version it ACKed.
            client.ack(rds)
            acked = ads.status("n1").acked[CDS]
            client.ack(cds, error="bad cluster")
            await asyncio.sleep(0.2)
            status = ads.status("n1")
            assert status.error == "bad cluster"
            assert status.acked[CDS] == acked and status.rejected[CDS] == cds.system_version_info
            assert await client.nothing_within(0.2)

            # A fixed snapshot whose routes equal what the client holds: only the clusters go out.
            await ads.set_snapshot("n1", _resources(3000, "7s"))
            fixed = await client.receive()
            assert fixed.type_url == CDS and _names(fixed) == ["web-primary"]
            client.ack(fixed)
            await ads.wait_acked("n1")
            assert await client.nothing_within(0.2)
            await client.close()

    asyncio.run(run())


def test_clusters_leave_only_after_the_routes_that_named_them() -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000, "15s", "old"))
            client = await _subscribed(ads)

            await ads.set_snapshot("n1", _resources(1000, "15s", "new"))
            added = await client.receive()
            assert (added.type_url, _names(added), list(added.removed_resources)) == (CDS, ["new"], [])
            client.ack(added)
            routes = await client.receive()
            assert routes.type_url == RDS
            client.ack(routes)
            removed = await client.receive()
            assert (removed.type_url, _names(removed), list(removed.removed_resources)) == (CDS, [], ["old"])
            client.ack(removed)
            await ads.wait_acked("n1")
            await client.close()

    asyncio.run(run())


def test_a_reconnecting_sidecar_gets_only_what_changed_while_it_was_away() -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000, "15s", "kept", "dropped"))
            first = DeltaClient.insecure(ads.port, "n1")
            first.subscribe(CDS)
            clusters = await first.receive()
            first.ack(clusters)
            held = {resource.name: resource.version for resource in clusters.resources}
            assert set(unpack(clusters, cluster_pb2.Cluster)) == {"kept", "dropped"}
            await first.close()

            # Same content: the reconnecting client is told nothing new.
            again = DeltaClient.insecure(ads.port, "n1")
            again.subscribe(CDS, held=held)
            assert await again.nothing_within(0.3)
            await again.close()

            # "dropped" went away while the client was disconnected: it is told to remove it.
            await ads.set_snapshot("*", _resources(1000, "15s", "kept"))
            resumed = DeltaClient.insecure(ads.port, "n1")
            resumed.subscribe(CDS, held=held)
            update = await resumed.receive()
            assert (_names(update), list(update.removed_resources)) == ([], ["dropped"])
            resumed.ack(update)
            assert await resumed.nothing_within(0.2)
            assert ads.status("n1").acked[CDS] == update.system_version_info
            await resumed.close()

    asyncio.run(run())


def test_what_a_sidecar_sends_is_bounded_and_departed_nodes_are_forgotten(monkeypatch: MonkeyPatch) -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000))
            client = DeltaClient.insecure(ads.port, "n1")
            client.subscribe(CDS)
            client.ack(await client.receive(), error="x" * 100_000)
            deadline = time.monotonic() + 5
            while not ads.status("n1").error:
                assert time.monotonic() < deadline, "the NACK was not recorded"
                await asyncio.sleep(0.02)
            assert ads.status("n1").error == "x" * MAX_ERROR_MESSAGE
            await client.close()

            # Pods come and go: the status of one whose last stream left is dropped after a while.
            while "n1" in ads.nodes():
                await asyncio.sleep(0.02)
            monkeypatch.setattr(ads_module, "DEPARTED_RETENTION", 0.0)
            other = await _subscribed(ads, "n2")
            assert ads.status("n1").error is None and not ads.status("n1").acked
            assert ads.status("n2").acked
            await other.close()

    asyncio.run(run())


def test_a_stream_asking_beyond_what_meshd_serves_is_ended_and_the_others_go_on() -> None:
    """Any pod with a mesh token can open a stream: names piling up over requests, too many or too long
    names in one request, or a type meshd does not serve end that stream, and only that one."""

    async def refused(names_by_request: list[tuple[str, list[str]]]) -> grpc.StatusCode:
        client = DeltaClient.insecure(ads.port, "greedy.team-x")
        for type_url, names in names_by_request:
            client.subscribe(type_url, names)
        try:
            return await client.refused()
        finally:
            await client.close()

    batch = MAX_SUBSCRIBED_NAMES // 4
    piling = [(RDS, [f"r{i}-{n}" for n in range(batch)]) for i in range(5)]
    ads: AdsServer

    async def run() -> None:
        nonlocal ads
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000))
            client = await _subscribed(ads)
            assert await refused(piling) == grpc.StatusCode.RESOURCE_EXHAUSTED
            flood = [(VIRTUAL_HOST_TYPE, [str(n) for n in range(MAX_SUBSCRIBED_NAMES + 1)])]
            assert await refused(flood) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await refused([(CDS, []), (RDS, ["x" * (MAX_RESOURCE_NAME + 1)])]) == (
                grpc.StatusCode.INVALID_ARGUMENT
            )
            unserved: list[tuple[str, list[str]]] = [
                (CDS, []),
                *((f"type.googleapis.com/made.Up{i}", []) for i in range(3)),
            ]
            assert await refused(unserved) == grpc.StatusCode.INVALID_ARGUMENT
            assert ads.counters.refused_streams == {"subscription_limit": 3, "unknown_type": 1}

            # Within the bound, names come and go; the well-behaved stream still gets every change.
            client.subscribe(RDS, [f"extra-{n}" for n in range(MAX_SUBSCRIBED_NAMES - 1)])
            await ads.set_snapshot("*", _resources(1000, "7s"))
            response = await client.receive()
            assert (response.type_url, _names(response)) == (RDS, ["local"])
            client.ack(response)
            await client.close()

    asyncio.run(run())


def test_a_shared_snapshot_keeps_few_restrictions_to_name_sets() -> None:
    """Streams of one view share its snapshot; one stream changing its names with every request
    must not grow what that snapshot caches."""
    resource = any_pb2.Any()
    snapshot = TypeSnapshot.of([(f"outbound/s{n}", resource) for n in range(10)])
    for n in range(MAX_CACHED_RESTRICTIONS * 4):
        held = snapshot.restricted(frozenset({f"outbound/s{n % 10}", f"unknown-{n}"}))
        assert list(held.entries) == [f"outbound/s{n % 10}"]
    assert len(snapshot._derived) == MAX_CACHED_RESTRICTIONS


def test_virtual_hosts_subscribed_by_route_configuration_name() -> None:
    """Envoy 1.40 subscribes to VHDS with no names (all); newer Envoys name the route configuration
    and mean every ``<name>/<host>`` resource in it."""

    def host(name: str) -> tuple[str, any_pb2.Any]:
        resource = any_pb2.Any()
        resource.Pack(route_components_pb2.VirtualHost(name=name, domains=[name]))
        return name, resource

    async def run() -> None:
        async with AdsServer() as ads:
            hosts = TypeSnapshot.of([host("outbound/web_shop"), host("outbound/pay_shop"), host("inbound/x")])
            await ads.set_snapshot("*", {VIRTUAL_HOST_TYPE: hosts})
            for names, expected in (((), ["inbound/x", "outbound/pay_shop", "outbound/web_shop"]),
                                    (("outbound",), ["outbound/pay_shop", "outbound/web_shop"])):  # fmt: skip
                client = DeltaClient.insecure(ads.port, "n1")
                client.subscribe(VIRTUAL_HOST_TYPE, names)
                assert sorted(_names(await client.receive())) == expected
                await client.close()

    asyncio.run(run())


def _split_objects(namespace: str, name: str, index: int, canary_weight: int) -> list[dict[str, Any]]:
    return meshed_service(
        namespace, name, (f"10.0.{index}.1", f"10.0.{index}.2", f"10.0.{index}.3"), canary_weight
    )


def test_a_weight_change_sends_other_namespaces_one_virtual_host() -> None:
    """Views of other namespaces are merged from shared parts; what each sidecar receives is still
    exactly what changed in its view: the one virtual host, and a removed service's name."""
    from canaryctl_mesh.control import PLACEHOLDER_HOST, MeshControlPlane

    def mesh(web_weight: int, with_pay: bool = True) -> list[dict[str, Any]]:
        objects = _split_objects("a", "web", 1, web_weight) + _split_objects("b", "api", 3, 0)
        return objects + (_split_objects("a", "pay", 2, 0) if with_pay else [])

    async def next_virtual_hosts(client: DeltaClient) -> Any:
        while (response := await client.receive()).type_url != VIRTUAL_HOST_TYPE:
            client.ack(response)
        client.ack(response)
        return response

    async def run() -> None:
        async with AdsServer() as ads:
            plane = MeshControlPlane(ads)
            await plane.sync(mesh(0))
            client = DeltaClient.insecure(ads.port, "pod.b")
            client.subscribe(CDS)
            client.subscribe(LDS)
            client.subscribe(RDS, [config.OUTBOUND_ROUTE_NAME])
            client.subscribe(VIRTUAL_HOST_TYPE)
            first = await next_virtual_hosts(client)
            placeholder = f"outbound/{PLACEHOLDER_HOST}"
            assert sorted(_names(first)) == sorted(
                ["outbound/api_b", "outbound/pay_a", "outbound/web_a", placeholder]
            )

            await plane.sync(mesh(30))
            changed = await next_virtual_hosts(client)
            assert (_names(changed), list(changed.removed_resources)) == (["outbound/web_a"], [])
            host = unpack(changed, route_components_pb2.VirtualHost)["outbound/web_a"]
            assert isinstance(host, route_components_pb2.VirtualHost)
            weights = {c.name: c.weight.value for c in host.routes[-1].route.weighted_clusters.clusters}
            assert weights == {"web-primary_a": 70, "web-canary_a": 30}

            await plane.sync(mesh(30, with_pay=False))
            removed = await next_virtual_hosts(client)
            assert (_names(removed), list(removed.removed_resources)) == ([], ["outbound/pay_a"])
            await client.close()

    asyncio.run(run())


def test_a_plane_that_holds_sends_no_view_before_its_first_update() -> None:
    """meshd holds views until it has read the mesh: an empty view would take a reconnecting sidecar's
    routes away. A plane that does not hold answers a new sidecar at once."""
    from canaryctl_mesh.control import MeshControlPlane

    async def run() -> None:
        async with AdsServer() as ads:
            plane = MeshControlPlane(ads, hold_until_update=True)
            held = DeltaClient.insecure(ads.port, "pod.a")
            held.subscribe(CDS)
            assert await held.nothing_within(1.0), "a view went out before the mesh was read"
            await plane.sync(_split_objects("a", "web", 1, 0))
            assert "web-primary_a" in _names(await held.receive(10))
            await held.close()
        async with AdsServer() as ads:
            MeshControlPlane(ads)
            prompt = DeltaClient.insecure(ads.port, "pod.a")
            prompt.subscribe(CDS)
            assert (await prompt.receive(10)).type_url == CDS
            await prompt.close()

    asyncio.run(run())
