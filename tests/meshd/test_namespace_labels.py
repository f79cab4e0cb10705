"""The injector's namespace labels come from a watch: reviews cost the API server no request, a label
change is seen without one, and a namespace the watch has not shown yet is looked up once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import kmock
import pytest
from kubernetes import client

from canaryctl_mesh.injector import INJECT_LABEL
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.injector import WatchedNamespaceLabels

pytestmark = pytest.mark.asyncio


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def count_namespace_requests(emulator: kmock.KubernetesEmulator) -> Counter[str]:
    """Requests for Namespaces from now on, by action (fetch: a GET of one)."""
    counted: Counter[str] = Counter()
    handle = emulator._handle

    async def counting(request: Any) -> Any:
        if request.resource is not None and request.resource.plural == "namespaces":
            counted[str(request.action)] += 1
        return await handle(request)

    emulator._handle = counting  # type: ignore[method-assign]
    return counted


async def labels_become(
    labels: WatchedNamespaceLabels, name: str, expected: dict[str, str], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while (found := dict(await labels(name))) != expected:
        assert time.monotonic() < deadline, f"{name}: {found}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_reviews_read_labels_from_the_watch(
    emulator: kmock.KubernetesEmulator, kube_api: client.ApiClient, objects: KubeObjects
) -> None:
    await objects.apply(namespace("shop", **{INJECT_LABEL: "enabled"}))
    await objects.apply(namespace("plain"))
    requests = count_namespace_requests(emulator)
    async with WatchedNamespaceLabels(kube_api, objects) as labels:
        deadline = time.monotonic() + 15
        while not labels.reflector.synced.is_set():
            assert time.monotonic() < deadline, "Namespaces never listed"
            await asyncio.sleep(0.05)
        before = sum(requests.values())
        for _ in range(100):  # a rollout's worth of pods
            assert await labels("shop") == {INJECT_LABEL: "enabled"}
            assert await labels("plain") == {}
        assert sum(requests.values()) == before, f"lookups went to the API: {requests}"

        # A label added later is seen through the watch, still without a GET.
        await objects.apply(namespace("plain", **{INJECT_LABEL: "enabled"}))
        await labels_become(labels, "plain", {INJECT_LABEL: "enabled"})
        assert requests[str(kmock.action.FETCH)] == 0, requests
    assert not labels.reflector._thread.is_alive(), "the watch outlived the injector"


async def test_a_namespace_the_watch_has_not_shown_is_looked_up(
    emulator: kmock.KubernetesEmulator, kube_api: client.ApiClient, objects: KubeObjects
) -> None:
    async with WatchedNamespaceLabels(kube_api, objects) as labels:
        while not labels.reflector.synced.is_set():
            await asyncio.sleep(0.05)
        labels.reflector.stop()  # no more events: what the store does not hold must come from a GET
        await asyncio.to_thread(labels.reflector.join, 5)
        await objects.apply(namespace("new", **{INJECT_LABEL: "enabled"}))
        requests = count_namespace_requests(emulator)
        assert await labels("new") == {INJECT_LABEL: "enabled"}
        assert requests[str(kmock.action.FETCH)] == 1, requests
        assert await labels("missing") == {}
