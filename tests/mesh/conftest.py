"""Real parts for the mesh tests: loopback HTTP upstreams and Envoy processes, stopped by PID."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl_mesh import config
from canaryctl_mesh.local import LocalMesh
from canaryctl_mesh.loopback import UpstreamServers
from canaryctl_mesh.process import EnvoyProcess, envoy_binary

PRIMARY = "web-primary"
CANARY = "web-canary"


@pytest.fixture(scope="session")
def upstreams() -> Iterator[UpstreamServers]:
    with UpstreamServers([PRIMARY, CANARY]) as servers:
        yield servers


@pytest.fixture()
def fresh_upstreams(upstreams: UpstreamServers) -> UpstreamServers:
    upstreams.reset()
    return upstreams


@pytest.fixture(scope="session")
def local_mesh() -> Iterator[LocalMesh]:
    """One local-mode Envoy for the session; each test applies the routes it needs."""
    mesh = LocalMesh(concurrency=2)
    asyncio.run(mesh.start())
    yield mesh
    asyncio.run(mesh.stop())


def split(upstreams: UpstreamServers, primary: int, canary: int, **fields: object) -> config.RouteSpec:
    """The web service split between the two loopback upstreams."""
    backends = tuple(
        config.WeightedBackend(
            backend=config.Backend(name=name, address="127.0.0.1", port=upstreams[name].port), weight=weight
        )
        for name, weight in ((PRIMARY, primary), (CANARY, canary))
    )
    return config.RouteSpec(service="web", backends=backends, **fields)


@pytest.fixture()
def ads_envoys() -> Iterator[list[EnvoyProcess]]:
    """Envoys started by `start_ads_envoy` during a test, stopped by PID afterwards."""
    started: list[EnvoyProcess] = []
    yield started
    for envoy in started:
        asyncio.run(envoy.stop())


async def start_ads_envoy(started: list[EnvoyProcess], xds_port: int, node_id: str) -> EnvoyProcess:
    # Ready once it knows the primary's cluster: these tests send loopback resources, not a sidecar's.
    health = ("127.0.0.1", 0)
    bootstrap = config.ads_bootstrap(
        node_id, "127.0.0.1", xds_port, admin_port=0, health=health, ready_cluster=PRIMARY
    )
    envoy = EnvoyProcess(bootstrap)
    started.append(envoy)
    await envoy.start()
    return envoy


async def ready_status(envoy: EnvoyProcess) -> int:
    """What kubelet's probe of the sidecar's readiness gets: the HTTP status, 0 when refused."""
    port = await envoy.listener_port("health")
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(f"http://127.0.0.1:{port}{config.READY_PATH}")).status_code
    except httpx.TransportError:
        return 0


async def wait_ready(envoy: EnvoyProcess, timeout: float = 10.0) -> None:
    """Poll the sidecar's readiness as kubelet's startup probe does (a bound listener is not yet serving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await ready_status(envoy) == 200:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the sidecar was not ready within {timeout}s: {envoy.log_tail(5)}")


def envoy_validate(bootstrap: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate`` on `bootstrap` (written into `directory`): whether Envoy would start."""
    path = directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
