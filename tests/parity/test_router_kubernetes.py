"""Flagger's Kubernetes Service router tests (``pkg/router/kubernetes_default_test.go``) against canaryctl.

Flagger's ``KubernetesDefaultRouter`` writes the apex, primary and canary Services; in canaryctl the
workloads side does (``KubeWorkloads``: INITIALIZE, then the per-tick ``reconcile``). The objects live in
an in-memory store that applies as a server-side apply by one field manager does, and another writer's
change is a direct edit of the stored object. Each generated Service is checked against the Kubernetes
API's own schema.
"""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl.api.models import Canary
from canaryctl.engine.types import WorkloadOp
from canaryctl.operator.workloads import KubeWorkloads
from tests.parity.scheduler import workload
from tests.providers.routers.cases import InMemoryObjects
from tests.schemas.validation import validate

pytestmark = pytest.mark.asyncio
NS = "default"
SERVICES = ("podinfo", "podinfo-primary", "podinfo-canary")


def podinfo_canary(**service: Any) -> Canary:
    """newTestCanary's service: port 9898 on the podinfo Deployment; stored (it has a uid, so the
    Services it generates are owned by it)."""
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": NS, "uid": "8c2d4b8e-0000-4000-8000-000000000001"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898, **service},
            },
        }
    )


async def initialized(canary: Canary) -> tuple[KubeWorkloads, InMemoryObjects]:
    """``router.Initialize`` then ``router.Reconcile``: the three Services exist."""
    objects = InMemoryObjects(workload("Deployment"))
    workloads = KubeWorkloads(objects)
    await workloads.revision(canary)  # reads the target, as every tick does first
    await workloads.apply(canary, WorkloadOp.INITIALIZE)
    await workloads.reconcile(canary)
    return workloads, objects


def stored(objects: InMemoryObjects, name: str) -> dict[str, Any]:
    return objects.store["v1", "Service", NS, name]


async def test_traffic_distribution_reaches_every_generated_service() -> None:
    """TestServiceRouter_TrafficDistribution."""
    _, objects = await initialized(podinfo_canary(trafficDistribution="PreferClose"))
    for name in SERVICES:
        service = stored(objects, name)
        assert service["spec"]["trafficDistribution"] == "PreferClose", name
        validate(service)


async def test_traffic_distribution_removed_from_the_spec_leaves_the_services() -> None:
    """canaryctl re-applies the Services every tick: a field dropped from spec.service is dropped too."""
    workloads, objects = await initialized(podinfo_canary(trafficDistribution="PreferSameZone"))
    assert all(stored(objects, name)["spec"]["trafficDistribution"] == "PreferSameZone" for name in SERVICES)
    await workloads.reconcile(podinfo_canary())
    assert all("trafficDistribution" not in stored(objects, name)["spec"] for name in SERVICES)


@pytest.mark.parametrize(
    "fields",
    [("annotations",), ("labels",), ("annotations", "labels")],
    ids=[
        "TestServiceRouter_Update",
        "TestServiceRouter_UnmanagedLabels",
        "TestServiceRouter_UnmanagedMetadata_AnnotationsAndLabels",
    ],
)
async def test_unmanaged_metadata_keeps_what_another_writer_set(fields: tuple[str, ...]) -> None:
    """Flagger's tests, plus a key the Canary also sets: an unmanaged key keeps the value someone else
    wrote even where spec.service.apex names it (Flagger's reconcileService copies the stored value
    over the spec's), while a managed key is restored. Unlike Flagger, which replaces the whole map on
    update, canaryctl leaves a key it never set ("removable") to its writer, as server-side apply does."""
    canary = podinfo_canary(
        apex={field: {"test": "expectedvalue", "unmanaged": "from-the-canary"} for field in fields},
        unmanagedMetadata={field: ["unmanaged"] for field in fields},
    )
    workloads, objects = await initialized(canary)
    meta = stored(objects, "podinfo")["metadata"]
    for field in fields:
        assert meta[field]["unmanaged"] == "from-the-canary", "set while nobody else has"
        meta[field] |= {"unmanaged": "true", "test": "newvalue", "removable": "true"}
    await workloads.reconcile(canary)
    await workloads.reconcile(canary)  # and it stays so, tick after tick

    meta = stored(objects, "podinfo")["metadata"]
    for field in fields:
        written = meta[field]
        assert (written["test"], written["unmanaged"], written["removable"]) == (
            "expectedvalue",
            "true",
            "true",
        )
    validate(stored(objects, "podinfo"))
