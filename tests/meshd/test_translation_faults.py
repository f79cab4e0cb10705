"""A fault of meshd while translating one namespace leaves that namespace as it was and every other moving."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from kubernetes import client

from canaryctl_mesh import config, control
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.loopback import UpstreamServers
from canaryctl_mesh.meshd.control_plane import ControlPlane
from canaryctl_mesh.translate import Translation, translate_namespace
from tests.meshd.conftest import NS, service, traffic_split
from tests.meshd.test_control_plane import create_mesh, new_snapshot

pytestmark = pytest.mark.asyncio

BROKEN = "broken"


async def test_a_namespace_whose_translation_raises_keeps_the_others_moving(
    objects: KubeObjects,
    kube_api: client.ApiClient,
    upstreams: UpstreamServers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = translate_namespace

    def fails_for_broken(items: Iterable[Any], *args: Any) -> Translation:
        items = list(items)
        if any(item["metadata"]["namespace"] == BROKEN for item in items):
            raise RuntimeError("a bug in translation")
        return real(items, *args)

    monkeypatch.setattr(control, "translate_namespace", fails_for_broken)
    ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=0)
    plane = ControlPlane(kube_api, [NS, BROKEN], "127.0.0.1", 0, ports=ports, bind_host="127.0.0.1")
    async with plane:
        await objects.apply(
            {**service("web", "10.96.1.10"), "metadata": {"name": "web", "namespace": BROKEN}}
        )
        await create_mesh(objects, upstreams)
        await new_snapshot(plane, "", 10)
        first = plane.version
        await objects.apply(traffic_split("web", 50, 50))
        await new_snapshot(plane, first, 10)
        failures = plane.metrics.registry.get_sample_value("canaryctl_mesh_translation_failures_total")
        assert failures is not None and failures >= 1
