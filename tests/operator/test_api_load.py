"""What the operator costs the API server, and how its status writes meet other writers.

An idle tick reads from the operator's watch caches and writes nothing. Status writes carry the
resourceVersion the tick read; the emulator answers a stale one with 409 Conflict as a real API server
does (see ``StampingEmulator``), so these tests fail if a write ignores, or overwrites, another writer.
"""

from __future__ import annotations

import asyncio
import time

import kmock
import pytest

from canaryctl.api.models import API_VERSION
from canaryctl.operator.handlers import CanaryOperator, OperatorConfig, StatusConflict
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl_mesh.kinds import KINDS
from canaryctl_mesh.kube import KubeObjects, resource_path
from tests.kube.cluster import Kubelet
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NS, Obj, canary, get_canary, setup_target, wait_phase, writes

pytestmark = pytest.mark.asyncio

PLURALS = {kind.plural for kind in KINDS.values() if kind.namespaced}
IDLE_TICKS = 4


def object_reads(emulator: kmock.KubernetesEmulator, since: int) -> list[str]:
    """GETs of one named object (not lists and watches, which name a collection)."""
    calls: list[tuple[str, str]] = emulator.calls  # type: ignore[attr-defined]
    return [path for method, path in calls[since:] if method == "GET" and path.split("/")[-2] in PLURALS]


async def test_idle_ticks_read_from_memory_and_write_nothing(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "idle")
    await objects.apply(canary("idle"))
    running = await start_operator()
    await wait_phase(objects, "idle", "Initialized")
    await asyncio.sleep(1)  # settle: the tick after initialization may still write

    start, ticks = len(emulator.calls), running.operator.ticks  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while running.operator.ticks < ticks + IDLE_TICKS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert running.operator.ticks >= ticks + IDLE_TICKS, "the operator stopped ticking"
    assert writes(emulator, start) == []
    assert object_reads(emulator, start) == []

    # A change made behind the operator's back reaches it through the watch: a new revision.
    target = await objects.get("apps/v1", "Deployment", NS, "idle")
    assert target is not None
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    await objects.apply(target)
    await wait_phase(objects, "idle", "Progressing")


def stored(emulator: kmock.KubernetesEmulator, name: str) -> Obj:
    return dict(emulator.objects[f"{API_VERSION}/canaries", NS, name].raw)


@pytest.fixture()
def operator(objects: KubeObjects) -> CanaryOperator:
    """An operator that is not running: only its status writes are exercised."""
    return CanaryOperator(OperatorConfig(peering=None), objects.api, ControllerMetrics())


async def read_with_status(objects: KubeObjects, name: str, status: Obj) -> Obj:
    await objects.apply(canary(name))
    path = resource_path(API_VERSION, "Canary", NS, name) + "/status"
    await objects.request("PATCH", path, {"status": status}, "application/merge-patch+json")
    return await get_canary(objects, name)


async def test_a_status_write_is_repeated_after_a_conflict_with_a_metadata_change(
    objects: KubeObjects, operator: CanaryOperator, emulator: kmock.KubernetesEmulator
) -> None:
    body = await read_with_status(objects, "meta", {"phase": "Progressing", "canaryWeight": 20})
    # Another writer (a label, kopf's own annotations) moves the object past the version read.
    path = resource_path(API_VERSION, "Canary", NS, "meta")
    await objects.request(
        "PATCH", path, {"metadata": {"labels": {"team": "a"}}}, "application/merge-patch+json"
    )

    start = len(emulator.calls)  # type: ignore[attr-defined]
    result = await operator._store(body, {"phase": "Progressing", "canaryWeight": 40})

    now = stored(emulator, "meta")
    assert now["status"]["canaryWeight"] == 40
    assert now["metadata"]["labels"] == {"team": "a"}
    assert result["metadata"]["resourceVersion"] == now["metadata"]["resourceVersion"]
    # The first write was refused (409), the Canary read again, the write repeated.
    assert writes(emulator, start) == [f"PATCH {path}/status"] * 2


async def test_a_status_changed_by_another_writer_is_never_written_over(
    objects: KubeObjects, operator: CanaryOperator, emulator: kmock.KubernetesEmulator
) -> None:
    body = await read_with_status(objects, "race", {"phase": "Progressing", "canaryWeight": 20})
    path = resource_path(API_VERSION, "Canary", NS, "race") + "/status"
    await objects.request("PATCH", path, {"status": {"canaryWeight": 60}}, "application/merge-patch+json")

    with pytest.raises(StatusConflict):
        await operator._store(body, {"phase": "Progressing", "canaryWeight": 40})

    assert stored(emulator, "race")["status"]["canaryWeight"] == 60
    # The next tick starts from what the other writer stored.
    assert operator._bodies[NS, "race"]["status"]["canaryWeight"] == 60
