"""The shared emulator fixtures serve canaryctl's Objects port end to end (create/get/patch/list/delete)."""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl_mesh.kube import KubeObjects
from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401

pytestmark = pytest.mark.asyncio


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "test", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
    }


async def test_deployment_round_trip(objects: KubeObjects) -> None:  # noqa: F811
    created = await objects.apply(deployment(2))
    assert created["spec"]["replicas"] == 2

    await objects.apply(deployment(0))
    found = await objects.get("apps/v1", "Deployment", "test", "web")
    assert found is not None and found["spec"]["replicas"] == 0
    assert found["metadata"]["labels"] == {"app": "web"}

    listed = await objects.list_objects("apps/v1", "Deployment", "test")
    assert [item["metadata"]["name"] for item in listed] == ["web"]
    assert await objects.list_objects("apps/v1", "Deployment", "default") == []

    await objects.delete("apps/v1", "Deployment", "test", "web")
    assert await objects.get("apps/v1", "Deployment", "test", "web") is None
    await objects.delete("apps/v1", "Deployment", "test", "web")  # absent: no error


async def test_namespaces_are_listed(objects: KubeObjects) -> None:  # noqa: F811
    names = {ns["metadata"]["name"] for ns in await objects.list_objects("v1", "Namespace", None)}
    assert {"default", "test"} <= names
    assert await objects.get("v1", "Namespace", "", "test") is not None
