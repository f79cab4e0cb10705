"""The loopback upstreams tell Envoy's mirrored copies from ordinary requests, with or without a port."""

from __future__ import annotations

import asyncio

from canaryctl_mesh.loopback import HttpConnection, UpstreamServers


def test_shadow_copies_are_counted_whether_the_host_has_a_port_or_not() -> None:
    with UpstreamServers(["app"]) as servers:
        app = servers["app"]

        async def send() -> None:
            connection = HttpConnection("127.0.0.1", app.port)
            for host in ("app", "app-shadow", "app-shadow:8080", "app:8080", "app-shadowed:8080"):
                status, _ = await connection.request(headers={"host": host})
                assert status == 200

        asyncio.run(send())
        assert (app.requests, app.shadow_requests) == (5, 2)
