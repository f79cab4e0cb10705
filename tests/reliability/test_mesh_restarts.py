"""The included mesh under traffic while backends are removed and its parts restart.

Real Envoy processes and loopback upstreams (the mesh suite's fixtures); clients keep sending on
keep-alive connections and every response is stamped with the time its request was sent, so "no
request reached a removed backend once the change was applied" is checked request by request.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.local import LocalMesh
from canaryctl_mesh.loopback import HttpConnection, UpstreamServers
from canaryctl_mesh.process import EnvoyProcess
from tests.mesh.conftest import CANARY, PRIMARY, ready_status, split, start_ads_envoy, wait_ready
from tests.reliability.traffic import Response, Users

NODE = "web-reliability.default"
SETTLE_SECONDS = 0.3


def only(upstreams: UpstreamServers, name: str) -> config.RouteSpec:
    """The web service on one backend: the other one's cluster is removed, not weighted to 0."""
    weighted = next(wb for wb in split(upstreams, 100, 100).backends if wb.backend.name == name)
    return config.RouteSpec(service="web", backends=(weighted,))


def _ads_resources(spec: config.RouteSpec) -> config.Resources:
    return config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")


async def _cluster_names(envoy: EnvoyProcess) -> set[str]:
    statuses = (await envoy.get("/clusters?format=json")).json().get("cluster_statuses", [])
    return {status["name"] for status in statuses}


def test_local_mesh_removes_a_backend_under_traffic(
    local_mesh: LocalMesh, fresh_upstreams: UpstreamServers
) -> None:
    async def run() -> tuple[list[Response], float]:
        await local_mesh.apply(split(fresh_upstreams, 50, 50))
        users = Users(local_mesh.listen_port).start()
        await asyncio.sleep(SETTLE_SECONDS)
        await local_mesh.apply(only(fresh_upstreams, PRIMARY))
        applied = time.monotonic()
        await asyncio.sleep(SETTLE_SECONDS)
        responses = await users.stop()
        assert CANARY not in await _cluster_names(local_mesh.envoy), "the canary cluster was removed"
        return responses, applied

    responses, applied = asyncio.run(run())
    assert {r.status for r in responses} == {200}, "no 5xx and no dropped connection while the cluster went"
    assert any(r.body == CANARY for r in responses if r.sent < applied)
    after = [r for r in responses if r.sent >= applied]
    assert after and {r.body for r in after} == {PRIMARY}


async def _one_request(port: int) -> int:
    """The status of one GET, 0 when the connection fails."""
    connection = HttpConnection("127.0.0.1", port)
    try:
        status, _ = await connection.request()
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return 0
    finally:
        await connection.close()
    return status


async def _ads_sidecar(ads: AdsServer, envoys: list[EnvoyProcess], spec: config.RouteSpec) -> EnvoyProcess:
    await ads.set_snapshot("*", _ads_resources(spec))
    envoy = await start_ads_envoy(envoys, ads.port, NODE)
    await ads.wait_acked(NODE)
    return envoy


def test_control_plane_and_sidecar_restarts_under_traffic(
    upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]
) -> None:
    async def run() -> None:
        ads = AdsServer()
        await ads.start()
        envoy = await _ads_sidecar(ads, ads_envoys, split(upstreams, 50, 50))
        users = Users(await envoy.listener_port("local")).start()
        await asyncio.sleep(SETTLE_SECONDS)

        # All traffic moves to the canary; then the control plane goes away.
        await ads.set_snapshot(NODE, _ads_resources(split(upstreams, 0, 100)))
        await ads.wait_acked(NODE)
        moved = time.monotonic()
        await ads.stop()
        down = time.monotonic()
        await asyncio.sleep(2 * SETTLE_SECONDS)

        # A new control plane on the same port sends traffic back: Envoy reconnects and converges.
        restarted = AdsServer(port=ads.port)
        await restarted.start()
        try:
            await restarted.set_snapshot("*", _ads_resources(split(upstreams, 100, 0)))
            up = time.monotonic()
            await restarted.wait_acked(NODE, timeout=10)
            converged = time.monotonic()
            await asyncio.sleep(SETTLE_SECONDS)
            responses = await users.stop()

            # A sidecar restarted (stopped by PID) gets the current config before it listens; users
            # start once it reports ready, as an app container waits for the proxy's startup probe.
            await envoy.stop()
            replacement = await start_ads_envoy(ads_envoys, restarted.port, NODE)
            await wait_ready(replacement)
            fresh = Users(await replacement.listener_port("local")).start()
            await asyncio.sleep(SETTLE_SECONDS)
            after_restart = await fresh.stop()
        finally:
            await restarted.stop()

        assert {r.status for r in responses} == {200}, "no error while the control plane was down"
        outage = [r for r in responses if down <= r.sent < up]
        assert outage and {r.body for r in outage} == {CANARY}, "the last config kept serving"
        assert {r.body for r in responses if moved <= r.sent < up} == {CANARY}
        assert {r.body for r in responses if r.sent >= converged} == {PRIMARY}
        assert after_restart and {(r.status, r.body) for r in after_restart} == {(200, PRIMARY)}

    asyncio.run(run())


def test_a_starting_sidecar_refuses_connections_until_it_has_routes(
    upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]
) -> None:
    """A listener's port is bound (and reported by the admin API) before Envoy serves on it: Envoy
    listens only once its first routes arrived. Readiness is what tells a caller it may send."""

    async def run() -> None:
        async with AdsServer() as ads:
            complete = _ads_resources(split(upstreams, 100, 0))
            await ads.set_snapshot("*", config.Resources(complete.clusters, complete.listeners, routes=[]))
            envoy = await start_ads_envoy(ads_envoys, ads.port, NODE)
            port = await envoy.listener_port("local")
            await asyncio.sleep(SETTLE_SECONDS)
            assert await _one_request(port) == 0, "nothing may answer before the routes arrive"
            assert await ready_status(envoy) != 200
            await ads.set_snapshot("*", complete)
            await wait_ready(envoy)
            assert await _one_request(port) == 200

    asyncio.run(run())


@pytest.mark.slow
def test_a_sidecar_that_never_got_its_config_is_not_ready(ads_envoys: list[EnvoyProcess]) -> None:
    """Envoy stops waiting for its first config after 15 s (initial fetch timeout) and listens with
    none; readiness must still say no, or the kubelet would start the app on a proxy with no routes."""

    async def run() -> None:
        async with AdsServer() as ads:  # a control plane with nothing to send
            envoy = await start_ads_envoy(ads_envoys, ads.port, NODE)

            async def state() -> str:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{envoy.admin_url}/ready")).text.strip()

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and await state() != "LIVE":
                await asyncio.sleep(0.2)
            assert await state() == "LIVE", "Envoy gave up waiting and serves"
            assert await ready_status(envoy) == 503

    asyncio.run(run())


def test_ads_removing_a_backend_under_traffic_never_503s(
    upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]
) -> None:
    async def run() -> tuple[list[Response], float]:
        async with AdsServer() as ads:
            envoy = await _ads_sidecar(ads, ads_envoys, split(upstreams, 50, 50))
            users = Users(await envoy.listener_port("local")).start()
            await asyncio.sleep(SETTLE_SECONDS)
            await ads.set_snapshot(NODE, _ads_resources(only(upstreams, PRIMARY)))
            await ads.wait_acked(NODE)
            acked = time.monotonic()
            await asyncio.sleep(SETTLE_SECONDS)
            responses = await users.stop()
            assert CANARY not in await _cluster_names(envoy)
            return responses, acked

    responses, acked = asyncio.run(run())
    assert {r.body for r in responses if r.sent >= acked} == {PRIMARY}
    assert {r.status for r in responses} == {200}, [r for r in responses if r.status != 200][:3]
