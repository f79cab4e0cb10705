"""Sidecar mode end to end: SMI + TrafficPolicy objects → control plane → ADS → a real Envoy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from canaryctl_mesh import config, telemetry
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.control import MeshControlPlane
from canaryctl_mesh.loopback import UpstreamServers, fire
from canaryctl_mesh.process import EnvoyProcess
from tests.mesh.conftest import CANARY, PRIMARY, start_ads_envoy

NS = "shop"


def _objects(upstreams: UpstreamServers) -> list[dict[str, Any]]:
    def service(name: str, ip: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
        }

    def endpoints(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-x",
                "namespace": NS,
                "labels": {"kubernetes.io/service-name": name},
            },
            "ports": [{"name": "http", "port": upstreams[name].port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }

    return [
        service("web", "10.96.0.10"),
        service(PRIMARY, "10.96.0.11"),
        service(CANARY, "10.96.0.12"),
        endpoints(PRIMARY),
        endpoints(CANARY),
        {
            "apiVersion": "split.smi-spec.io/v1alpha1",
            "kind": "TrafficSplit",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "service": "web",
                "backends": [{"service": PRIMARY, "weight": "500m"}, {"service": CANARY, "weight": "500m"}],
            },
        },
        {
            "apiVersion": "mesh.canaryctl.dev/v1alpha1",
            "kind": "TrafficPolicy",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "service": "web",
                "faults": [{"backend": CANARY, "abort": {"httpStatus": 418, "percentage": 100}}],
            },
        },
    ]


def test_smi_objects_drive_a_sidecar(upstreams: UpstreamServers, ads_envoys: list[EnvoyProcess]) -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            envoy = await start_ads_envoy(ads_envoys, ads.port, "web-1.shop")
            admin_port = int(envoy.admin_url.rsplit(":", 1)[1])
            ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=admin_port)
            plane = MeshControlPlane(ads, ports, bind_host="127.0.0.1")
            await plane.sync(_objects(upstreams))
            await ads.wait_acked("web-1.shop")
            outbound = await envoy.listener_port("outbound")
            for host in ("web", "web.shop.svc.cluster.local:80", "10.96.0.10"):
                result = await fire("127.0.0.1", outbound, 400, 8, headers={"host": host})
                assert set(result.statuses) == {200, 418}, host
                assert result.bodies[PRIMARY] == result.statuses[200]  # the canary's share is all aborted
                assert 100 < result.statuses[418] < 300

            prometheus = await envoy.listener_port("prometheus")
            text = httpx.get(f"http://127.0.0.1:{prometheus}/stats/prometheus", timeout=5).text
            samples = telemetry.parse_samples(text)
            labels = {"canaryctl_service": "web_shop", "canaryctl_backend": f"{CANARY}_{NS}"}
            assert (
                telemetry.total(samples, telemetry.CALLER_RQ_TOTAL, envoy_response_code="418", **labels) > 0
            )

    asyncio.run(run())
