"""When the control plane makes its first push: once every reflector has listed, however late one of
them counts as synced."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes import client

from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.control_plane import ControlPlane
from canaryctl_mesh.meshd.watch import Reflector
from tests.meshd.conftest import CANARY, NS, PRIMARY, service, traffic_split

pytestmark = pytest.mark.asyncio


async def pushed(plane: ControlPlane, version: str, timeout: float) -> float:
    """Seconds until the control plane pushed a snapshot other than `version`."""
    began = time.monotonic()
    while plane.version == version:
        assert time.monotonic() - began < timeout, f"no new snapshot within {timeout}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def mesh(objects: KubeObjects) -> None:
    for obj in (service("web", "10.96.0.10"), service(PRIMARY, "10.96.0.11"), service(CANARY, "10.96.0.12")):
        await objects.apply(obj)
    await objects.apply(traffic_split("web", 80, 20))


async def test_the_first_push_comes_when_a_reflector_counts_as_synced_after_noting_its_list(
    kube_api: client.ApiClient, objects: KubeObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last reflector's list reaches the store, and only then does it count as synced: the sync
    loop must not take the store's change as seen and then wait for another that never comes."""
    await mesh(objects)
    listed = Reflector._list

    def slow_list(reflector: Reflector) -> str:
        version = listed(reflector)
        if reflector.source.kind == "EndpointSlice":  # none listed: no watch event follows
            time.sleep(1.0)  # in the reflector's thread: its list is in the store, synced is not set
        return version

    monkeypatch.setattr(Reflector, "_list", slow_list)
    async with ControlPlane(kube_api, [NS], "127.0.0.1", 0, bind_host="127.0.0.1", events=False) as plane:
        await pushed(plane, "", 30)
