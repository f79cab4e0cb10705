"""The control plane against kmock's emulator (real kubernetes client, list + watch) and a REAL Envoy."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from kubernetes import client

from canaryctl.local.prometheus import free_port
from canaryctl_mesh import config
from canaryctl_mesh.control import MTLS_LABEL
from canaryctl_mesh.kube import KubeObjects, api_client_for_host
from canaryctl_mesh.loopback import UpstreamServers, fire
from canaryctl_mesh.meshd.control_plane import ControlPlane
from canaryctl_mesh.process import EnvoyProcess
from canaryctl_mesh.translate import cluster_name
from tests.kube.emulator import declare, emulator_url, namespaces_path_fix
from tests.mesh.delta_client import DeltaClient, unpack
from tests.meshd.conftest import CANARY, NS, PRIMARY, endpoint_slice, service, traffic_split

pytestmark = pytest.mark.asyncio

NODE = "web-1.test"
RESTARTS = "canaryctl_mesh_watch_restarts_total"
REQUESTS = 1000


async def create_mesh(
    objects: KubeObjects, upstreams: UpstreamServers, split: dict[str, Any] | None = None
) -> None:
    for obj in (
        service("web", "10.96.0.10"),
        service(PRIMARY, "10.96.0.11"),
        service(CANARY, "10.96.0.12"),
        endpoint_slice(PRIMARY, upstreams[PRIMARY].port),
        endpoint_slice(CANARY, upstreams[CANARY].port),
        split or traffic_split("web", 80, 20),
    ):
        await objects.apply(obj)


@asynccontextmanager
async def serving_envoy(
    kube_api: client.ApiClient, sidecar: list[EnvoyProcess]
) -> AsyncIterator[tuple[ControlPlane, int]]:
    """A control plane watching NS and a real Envoy it configured: (the plane, Envoy's outbound port)."""
    admin = free_port()
    ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=admin)
    plane = ControlPlane(kube_api, [NS], "127.0.0.1", 0, ports=ports, bind_host="127.0.0.1")
    async with plane:
        envoy = EnvoyProcess(config.ads_bootstrap(NODE, "127.0.0.1", plane.ads.port, admin_port=admin))
        sidecar.append(envoy)
        await envoy.start()
        await plane.ads.wait_acked(NODE)
        yield plane, await envoy.listener_port("outbound")


def assert_share(served: Counter[str], name: str, expected: float) -> None:
    """Binomial: the observed count lies within 4σ of REQUESTS × expected (a false alarm in 16,000)."""
    sigma = math.sqrt(REQUESTS * expected * (1 - expected))
    assert abs(served[name] - REQUESTS * expected) <= 4 * sigma, served


async def routed(port: int) -> Counter[str]:
    result = await fire("127.0.0.1", port, REQUESTS, concurrency=8, headers={"host": "web"}, timeout=20)
    assert result.errors == 0 and set(result.statuses) == {200}, result.statuses
    return result.bodies


async def new_snapshot(plane: ControlPlane, version: str, timeout: float) -> None:
    """Until the control plane pushed a snapshot other than `version`."""
    deadline = time.monotonic() + timeout
    while plane.version == version:
        assert time.monotonic() < deadline, f"no new snapshot within {timeout}s"
        await asyncio.sleep(0.02)


async def pushed_after(plane: ControlPlane, version: str, timeout: float = 10.0) -> None:
    """Until the control plane pushed a snapshot other than `version` and the Envoy ACKed it."""
    await new_snapshot(plane, version, timeout)
    await plane.ads.wait_acked(NODE, timeout)


@pytest_asyncio.fixture
async def sidecar() -> AsyncIterator[list[EnvoyProcess]]:
    started: list[EnvoyProcess] = []
    yield started
    for envoy in started:
        await envoy.stop()


async def test_traffic_split_changes_reach_a_real_envoy(
    objects: KubeObjects,
    kube_api: client.ApiClient,
    upstreams: UpstreamServers,
    sidecar: list[EnvoyProcess],
) -> None:
    await create_mesh(objects, upstreams)
    async with serving_envoy(kube_api, sidecar) as (plane, outbound):
        envoy = sidecar[-1]
        assert_share(await routed(outbound), CANARY, 0.2)

        # A split naming a missing service is reported and left out; the rest keeps syncing. One change
        # at a time: a refusal is part of the pushed version, so waiting for "a new version" after both
        # would return on the push of the first whenever the watch delivers them a debounce apart.
        version = plane.version
        await objects.apply(traffic_split("broken", 50, 50, canary_service="missing"))
        await pushed_after(plane, version)
        assert any("'missing' not found" in r.message for r in plane.refused), plane.refused
        version = plane.version
        await objects.apply(traffic_split("web", 30, 70))
        await pushed_after(plane, version)
        assert_share(await routed(outbound), CANARY, 0.7)
        assert any("'missing' not found" in r.message for r in plane.refused), plane.refused

        # A deleted split takes its routes with it: "web" now passes through to its original destination.
        version = plane.version
        await objects.delete("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "web")
        await pushed_after(plane, version)
        clusters = (await envoy.get("/clusters?format=json")).json()["cluster_statuses"]
        assert cluster_name(CANARY, NS) not in {c["name"] for c in clusters}


def flagger_traffic_split(version: str, primary: int, canary: int) -> dict[str, Any]:
    """What Flagger's ``smi:v1alpha2`` / ``smi:v1alpha3`` router writes (pkg/router/smi_v1alpha2.go,
    smi_v1alpha3.go; types in pkg/apis/smi): named after the apex Service, owned by Flagger's Canary,
    the canary backend first, every weight written (also 0), no matches."""
    owner = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "name": "web",
        "uid": "5a1f0c2e-0000-4000-8000-00000000f1a9",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": f"split.smi-spec.io/{version}",
        "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": NS, "ownerReferences": [owner]},
        "spec": {
            "service": "web",
            "backends": [{"service": CANARY, "weight": canary}, {"service": PRIMARY, "weight": primary}],
        },
    }


async def test_sidecar_of_a_namespace_without_routed_services_starts_without_waiting(
    kube_api: client.ApiClient, sidecar: list[EnvoyProcess]
) -> None:
    """Envoy is live (its startup probe passes) once its first config arrived, not after the 15 s
    initial-fetch timeout of a virtual-host subscription that was answered with nothing."""
    admin = free_port()
    ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=admin)
    plane = ControlPlane(kube_api, [NS], "127.0.0.1", 0, ports=ports, bind_host="127.0.0.1")
    async with plane:
        await new_snapshot(plane, "", timeout=10.0)
        envoy = EnvoyProcess(config.ads_bootstrap(NODE, "127.0.0.1", plane.ads.port, admin_port=admin))
        sidecar.append(envoy)
        await envoy.start()
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2.0) as http:
            while (await http.get(f"{envoy.admin_url}/ready")).status_code != 200:
                assert time.monotonic() - started < 8.0, "the sidecar waited out its initial fetch"
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("version", ["v1alpha2", "v1alpha3"])
async def test_flagger_smi_traffic_splits_reach_a_real_envoy(
    version: str,
    objects: KubeObjects,
    kube_api: client.ApiClient,
    upstreams: UpstreamServers,
    sidecar: list[EnvoyProcess],
) -> None:
    """The included mesh serves Flagger's SMI router: its Reconcile (all traffic on the primary), then
    a SetRoutes step, as Flagger writes them, route a real Envoy's requests."""
    await create_mesh(objects, upstreams, flagger_traffic_split(version, 100, 0))
    async with serving_envoy(kube_api, sidecar) as (plane, outbound):
        assert (await routed(outbound))[PRIMARY] == REQUESTS

        version_before = plane.version
        await objects.apply(flagger_traffic_split(version, 40, 60))
        await pushed_after(plane, version_before)
        assert_share(await routed(outbound), CANARY, 0.6)
        assert not plane.refused, plane.refused


async def first_resources(port: int, type_url: str, into: type[Message]) -> dict[str, Message]:
    """What a raw delta ADS client gets first of a type from the control plane at 127.0.0.1:`port`."""
    client = DeltaClient.insecure(port, "probe.test")
    try:
        client.subscribe(type_url)
        return unpack(await client.receive(10), into)
    finally:
        await client.close()


async def first_clusters(port: int) -> set[str]:
    return set(await first_resources(port, config.CLUSTER_TYPE, cluster_pb2.Cluster))


async def test_control_plane_process_serves_ads_and_stops_on_sigterm(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, upstreams: UpstreamServers, meshd: Any
) -> None:
    await create_mesh(objects, upstreams)
    port = free_port()
    child = await meshd(
        "control-plane", "--xds-port", str(port), "--namespace", NS, "--insecure",
        "--server", emulator_url(emulator),
    )  # fmt: skip
    names = await first_clusters(port)
    assert {cluster_name(PRIMARY, NS), cluster_name(CANARY, NS), config.PASSTHROUGH_CLUSTER} <= names
    started = time.monotonic()
    assert await child.terminate() == 0, child.log.read_text()
    assert time.monotonic() - started < 5
    log = child.log.read_text()
    assert "pushed snapshot" in log
    # One connection per reflector: a pool smaller than that discards (and reopens) connections.
    assert "Connection pool is full" not in log, log


async def test_control_plane_pushes_nothing_until_the_api_server_answers() -> None:
    """Lists fail (connection refused) and back off; once the API server is up, the mesh is pushed."""
    port = free_port()
    api = api_client_for_host(f"http://127.0.0.1:{port}")
    plane = ControlPlane(api, [NS], "127.0.0.1", 0, bind_host="127.0.0.1", events=False)
    splits = [traffic_split("web", 8, 2)]
    with namespaces_path_fix():
        async with kmock.KubernetesEmulator() as emulator:
            declare(emulator)
            for obj in [service(name, "10.96.0.1") for name in ("web", PRIMARY, CANARY)] + splits:
                plural = "services" if obj["kind"] == "Service" else "trafficsplits"
                emulator.objects[f"{obj['apiVersion']}/{plural}", NS, obj["metadata"]["name"]] = obj
            await plane.start()
            try:
                # A sidecar reconnecting while nothing is listed yet waits: an empty view would take
                # its routes away.
                early = asyncio.create_task(first_clusters(plane.ads.port))
                await asyncio.sleep(1.0)
                assert plane.version == ""
                async with kmock.Server(emulator, port=port):
                    # After ~1 s of failures the backoff is at 0.8-1.6 s: the next list comes soon.
                    await new_snapshot(plane, "", timeout=5.0)
                    assert cluster_name(CANARY, NS) in await early
                    assert cluster_name(CANARY, NS) in await first_clusters(plane.ads.port)
                    # Each refused list counted as a restart after an error, per watched kind.
                    registry = plane.metrics.registry
                    for kind in ("TrafficSplit", "Service"):
                        labels = {"kind": kind, "reason": "error"}
                        assert (registry.get_sample_value(RESTARTS, labels) or 0) >= 1, kind
                        assert registry.get_sample_value(RESTARTS, labels | {"reason": "expired"}) == 0
                    await plane.stop()  # while the server runs, so the watch streams end first
            finally:
                await plane.stop()
                api.close()  # type: ignore[no-untyped-call]


async def test_mtls_follows_pods_and_the_namespace_label_through_the_watches(
    objects: KubeObjects, kube_api: client.ApiClient, upstreams: UpstreamServers
) -> None:
    """With mTLS the control plane watches Pods (a meshed endpoint's ServiceAccount is its peer
    identity) and Namespaces (the mode label), and a change to either reaches the sidecars' config."""
    await create_mesh(objects, upstreams)
    slice_ = endpoint_slice(PRIMARY, upstreams[PRIMARY].port)
    slice_["endpoints"][0]["targetRef"] = {"kind": "Pod", "name": "web-primary-1", "namespace": NS}
    await objects.apply(slice_)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-primary-1",
            "namespace": NS,
            "annotations": {
                config.STATUS_ANNOTATION: "injected",
                config.UNCAPTURED_INBOUND_ANNOTATION: "15000,15001,15006,15021,15090",
            },
        },
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app"}]},
        "status": {"podIP": "10.1.0.7", "phase": "Running"},
    }
    await objects.apply(pod)
    plane = ControlPlane(kube_api, [NS], "127.0.0.1", 0, bind_host="127.0.0.1", mtls=config.PERMISSIVE)
    async with plane:
        await new_snapshot(plane, "", 10)  # the watches listed everything
        clusters = await first_resources(plane.ads.port, config.CLUSTER_TYPE, cluster_pb2.Cluster)
        (match,) = clusters[cluster_name(PRIMARY, NS)].transport_socket_matches
        assert json_format.MessageToDict(match.match) == {
            config.PEER_KEY: "spiffe://cluster.local/ns/test/sa/web"
        }
        assert not clusters[cluster_name(CANARY, NS)].transport_socket_matches
        inbound = (await first_resources(plane.ads.port, config.LISTENER_TYPE, listener_pb2.Listener))[
            "inbound"
        ]
        assert [c.name for c in inbound.filter_chains] == ["inbound-mtls", "inbound-mtls-tcp", "inbound-http"]
        # The pod's IP, read through the watch, is a pass-through mTLS peer in the outbound listener.
        outbound = (await first_resources(plane.ads.port, config.LISTENER_TYPE, listener_pb2.Listener))[
            "outbound"
        ]
        prefixes = {
            r.address_prefix for c in outbound.filter_chains for r in c.filter_chain_match.prefix_ranges
        }
        assert prefixes == {"10.1.0.7"}

        version = plane.version
        namespace = await objects.get("v1", "Namespace", "", NS)
        assert namespace is not None
        namespace["metadata"].setdefault("labels", {})[MTLS_LABEL] = "strict"
        await objects.apply(namespace)
        await new_snapshot(plane, version, 10)
        inbound = (await first_resources(plane.ads.port, config.LISTENER_TYPE, listener_pb2.Listener))[
            "inbound"
        ]
        assert [c.name for c in inbound.filter_chains] == ["inbound-mtls", "inbound-mtls-tcp"]
