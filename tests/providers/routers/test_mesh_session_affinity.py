"""Session affinity on the included mesh, end to end with a real Envoy: the ``canaryctl`` router writes
the TrafficSplit and TrafficPolicy for a Canary with analysis.sessionAffinity, the mesh's translator
reads them back with Services and EndpointSlices pointing at loopback upstreams, and Envoy routes real
requests. A client that got the canary's cookie must keep reaching the canary.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_mesh.local import LocalMesh
from canaryctl_mesh.loopback import UpstreamServers
from canaryctl_mesh.translate import translate_namespace
from canaryctl_providers.routers import router_for
from tests.providers.routers.cases import NS, InMemoryObjects, make_canary

PRIMARY, CANARY = "podinfo-primary", "podinfo-canary"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstreams() -> Iterator[UpstreamServers]:
    with UpstreamServers([PRIMARY, CANARY]) as servers:
        yield servers


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    envoy = LocalMesh(concurrency=1)
    asyncio.run(envoy.start())
    yield envoy
    asyncio.run(envoy.stop())


def cluster(upstreams: UpstreamServers) -> list[dict[str, Any]]:
    """The Services and ready EndpointSlices the control plane would watch."""
    objects: list[dict[str, Any]] = []
    for name, port in (
        ("podinfo", None),
        (PRIMARY, upstreams[PRIMARY].port),
        (CANARY, upstreams[CANARY].port),
    ):
        ports = [{"name": "http", "port": 9898, "targetPort": 9898}]
        meta = {"name": name, "namespace": NS}
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": ports}})
        if port is not None:
            objects.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name,
                        "namespace": NS,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "ports": [{"name": "http", "port": port}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                }
            )
    return objects


def sticky_canary() -> Canary:
    canary = make_canary(
        analysis={
            "interval": "10s",
            "stepWeight": 10,
            "sessionAffinity": {"cookieName": "canary", "path": "/"},
        }
    )
    status = {"phase": "Progressing", "lastAppliedSpec": "rev-2"}
    return canary.model_validate({**canary.model_dump(by_alias=True), "status": status})


async def route(mesh: LocalMesh, upstreams: UpstreamServers, routes: RouteState) -> None:
    objects = InMemoryObjects(*cluster(upstreams))
    await router_for("canaryctl", objects).apply(sticky_canary(), routes)
    translation = translate_namespace(objects.store.values())
    assert not translation.refused, translation.refused
    [route] = translation.routes
    await mesh.apply(route.spec)


async def send(mesh: LocalMesh, count: int, cookie: str | None = None) -> list[httpx.Response]:
    """``count`` requests, each from a new client that shows only ``cookie`` (if any)."""
    headers = {"Host": "podinfo"}
    if cookie is not None:
        headers["Cookie"] = cookie
    responses = []
    for _ in range(count):
        async with httpx.AsyncClient(base_url=mesh.listen_url, timeout=10) as client:
            responses.append(await client.get("/", headers=headers))
    return responses


async def browse(mesh: LocalMesh, count: int) -> list[str]:
    """``count`` requests from one client that keeps the cookies it is given, as a browser does."""
    async with httpx.AsyncClient(base_url=mesh.listen_url, timeout=10, headers={"Host": "podinfo"}) as client:
        return [(await client.get("/")).text for _ in range(count)]


def test_a_client_with_the_canary_cookie_sticks_to_the_canary(
    mesh: LocalMesh, upstreams: UpstreamServers
) -> None:
    async def run() -> None:
        await route(mesh, upstreams, RouteState(canary_weight=50))
        first = await send(mesh, 40)
        served = Counter(r.text for r in first)
        assert served[CANARY] > 5 and served[PRIMARY] > 5, served
        handed_out = {r.headers.get("set-cookie") for r in first if r.text == CANARY}
        assert len(handed_out) == 1 and None not in handed_out, handed_out
        assert all("set-cookie" not in r.headers for r in first if r.text == PRIMARY)
        set_cookie = handed_out.pop()
        assert set_cookie is not None and set_cookie.endswith("; Max-Age=86400; Path=/")
        pair = set_cookie.split(";")[0]

        sticky = await send(mesh, 40, cookie=f"session=abc; {pair}; theme=dark")
        assert Counter(r.text for r in sticky) == {CANARY: 40}
        forged = await send(mesh, 40, cookie=f"{pair}x")  # another value is not this rollout's cookie
        assert Counter(r.text for r in forged)[PRIMARY] > 5
        visits = await browse(mesh, 60)  # P(no canary in 40 tries at 50%) is 1e-12
        first_canary = visits.index(CANARY)
        assert first_canary < 40 and set(visits[first_canary:]) == {CANARY}, visits

        # The rollout ends (promotion or rollback): the cookie no longer pins, and is deleted.
        await route(mesh, upstreams, RouteState(canary_weight=0))
        after = await send(mesh, 20, cookie=pair)
        assert Counter(r.text for r in after) == {PRIMARY: 20}
        assert {r.headers.get("set-cookie") for r in after} == {f"{pair}; Max-Age=-1"}

    asyncio.run(run())
