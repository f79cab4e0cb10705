"""ADS delivery to a real Envoy: ordering, ACK/NACK, and surviving a control plane restart."""

from __future__ import annotations

import asyncio
import time

import pytest

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.loopback import HttpConnection, UpstreamServers
from canaryctl_mesh.process import EnvoyProcess
from tests.mesh.conftest import CANARY, PRIMARY, split, start_ads_envoy

NODE = "web-7d9f.default"


def _resources(upstreams: UpstreamServers, primary: int, canary: int) -> config.Resources:
    return config.local_resources(
        split(upstreams, primary, canary), "127.0.0.1", 0, config.ads_source(), "/dev/null"
    )


async def _body(conn: HttpConnection) -> str:
    return (await conn.request())[1].decode()


async def _until(conn: HttpConnection, body: str, timeout: float = 10.0) -> float:
    """Seconds until a request answers with `body`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if await _body(conn) == body:
                return time.monotonic() - began
        except (OSError, asyncio.IncompleteReadError):
            await conn.close()
        await asyncio.sleep(0.001)
    raise AssertionError(f"never saw {body!r} within {timeout}s")


def test_ads_push_ack_nack_and_restart(upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]) -> None:
    async def run() -> None:
        ads = AdsServer()
        port = await ads.start()
        await ads.set_snapshot("*", _resources(upstreams, 100, 0))
        envoy = await start_ads_envoy(ads_envoys, port, NODE)
        status = await ads.wait_acked(NODE)
        assert set(status.acked) == set(config.TYPE_ORDER)
        conn = HttpConnection("127.0.0.1", await envoy.listener_port("local"))
        assert await _body(conn) == PRIMARY

        # Route-only changes propagate in milliseconds.
        for primary, canary, expected in ((0, 100, CANARY), (100, 0, PRIMARY)) * 5:
            await ads.set_snapshot(NODE, _resources(upstreams, primary, canary))
            assert await _until(conn, expected) < 0.5

        # Envoy refuses this; the server records the NACK and Envoy keeps the last good routes.
        bad = _resources(upstreams, 50, 50)
        for cluster in bad.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]["weighted_clusters"][
            "clusters"
        ]:
            cluster["weight"] = 0
        await ads.set_snapshot(NODE, bad)
        with pytest.raises(RuntimeError, match="weight"):
            await ads.wait_acked(NODE, timeout=5)
        assert "weight" in (ads.status(NODE).error or "")
        assert {await _body(conn) for _ in range(50)} == {PRIMARY}

        # A snapshot that does not even parse is refused by the control plane itself.
        broken = _resources(upstreams, 100, 0)
        broken.clusters[0]["connect_timeout"] = "soon"
        with pytest.raises(ValueError):
            await ads.set_snapshot(NODE, broken)

        # Control plane down: Envoy keeps serving; back up: Envoy reconnects and converges.
        await ads.stop()
        await asyncio.sleep(0.3)
        assert {await _body(conn) for _ in range(50)} == {PRIMARY}
        restarted = AdsServer(port=port)
        await restarted.start()
        try:
            await restarted.set_snapshot("*", _resources(upstreams, 0, 100))
            await restarted.wait_acked(NODE, timeout=10)
            assert await _until(conn, CANARY, timeout=2) < 2
        finally:
            await conn.close()
            await restarted.stop()

    asyncio.run(run())


def test_ads_sends_clusters_before_routes(upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]) -> None:
    """A new backend appears in the same snapshot as the route to it: no request may 503."""
    third = config.Backend(name="web-third", address="127.0.0.1", port=upstreams[CANARY].port)

    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(upstreams, 100, 0))
            envoy = await start_ads_envoy(ads_envoys, ads.port, NODE)
            await ads.wait_acked(NODE)
            conn = HttpConnection("127.0.0.1", await envoy.listener_port("local"))
            primary = split(upstreams, 100, 0).backends[0].model_copy(update={"weight": 0})
            spec = config.RouteSpec(
                service="web", backends=(primary, config.WeightedBackend(backend=third, weight=100))
            )
            await ads.set_snapshot(
                NODE, config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")
            )
            statuses = set()
            for _ in range(300):
                status, body = await conn.request()
                statuses.add(status)
                if body == CANARY.encode():
                    break
            await conn.close()
            assert statuses == {200}
            assert body == CANARY.encode()
            stats = await envoy.stats(r"^cluster\.web-third\.upstream_rq_total$")
            assert stats["cluster.web-third.upstream_rq_total"] >= 1

    asyncio.run(run())
