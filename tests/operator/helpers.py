"""Manifests and observations shared by the operator and reliability suites."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kmock

from canaryctl.api.models import API_VERSION
from canaryctl_mesh.kube import KubeObjects

NS = "test"
Obj = dict[str, Any]


# --- manifests ----------------------------------------------------------------------------------------


def pod_template(app: str, image: str, config: str | None = None) -> Obj:
    container: Obj = {"name": app, "image": image, "ports": [{"containerPort": 8080}]}
    if config is not None:
        container["envFrom"] = [{"configMapRef": {"name": config}}]
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [container]}}


def workload(kind: str, name: str, image: str = "app:v1", config: str | None = None) -> Obj:
    spec: Obj = {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name, image, config)}
    if kind == "Deployment":
        spec["replicas"] = 2
    meta = {"name": name, "namespace": NS, "labels": {"app": name}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def config_map(name: str, value: str) -> Obj:
    meta = {"name": name, "namespace": NS}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"COLOR": value}}


def canary(name: str, kind: str = "Deployment", **analysis: Any) -> Obj:
    defaults: Obj = {
        "interval": "500ms",
        "threshold": 2,
        "stepWeight": 50,
        "maxWeight": 100,
        "metrics": [{"name": "success", "templateRef": {"name": "success"}, "thresholdRange": {"min": 90}}],
    }
    spec: Obj = {
        "targetRef": {"apiVersion": "v1" if kind == "Service" else "apps/v1", "kind": kind, "name": name},
        "service": {"port": 80, "targetPort": 8080},
        "analysis": defaults | analysis,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


AUTOSCALER_APIS = {"HorizontalPodAutoscaler": "autoscaling/v2", "ScaledObject": "keda.sh/v1alpha1"}


def autoscaled(manifest: Obj, kind: str) -> Obj:
    """The Canary manifest with an autoscalerRef to the ``kind`` named like its target."""
    name = manifest["spec"]["targetRef"]["name"]
    manifest["spec"]["autoscalerRef"] = {"apiVersion": AUTOSCALER_APIS[kind], "kind": kind, "name": name}
    return manifest


METRIC_TEMPLATE: Obj = {
    "apiVersion": API_VERSION,
    "kind": "MetricTemplate",
    "metadata": {"name": "success", "namespace": NS},
    "spec": {"provider": {"type": "prometheus"}, "query": "success_{{ target }}"},
}


# --- observing ----------------------------------------------------------------------------------------


async def get_canary(objects: KubeObjects, name: str) -> Obj:
    found = await objects.get(API_VERSION, "Canary", NS, name)
    assert found is not None
    return found


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition", poll: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_phase(objects: KubeObjects, name: str, *phases: str, timeout: float = 20.0) -> Obj:
    async def reached() -> bool:
        status = (await get_canary(objects, name)).get("status") or {}
        return status.get("phase") in phases

    await wait_for(reached, timeout, f"{name} phase in {phases}")
    return await get_canary(objects, name)


async def invalid_conditions(objects: KubeObjects, name: str) -> dict[str, Obj]:
    """The canary's conditions by type, once it reports InvalidSpec."""

    async def reported() -> bool:
        status = (await get_canary(objects, name)).get("status") or {}
        return any(c["type"] == "InvalidSpec" for c in status.get("conditions") or [])

    await wait_for(reported, what=f"InvalidSpec on {name}")
    conditions = (await get_canary(objects, name))["status"]["conditions"]
    return {c["type"]: c for c in conditions}


def status_history(emulator: kmock.KubernetesEmulator, name: str) -> list[Obj]:
    """Every stored version's status: the emulator keeps an object's whole history."""
    versions = emulator.objects[f"{API_VERSION}/canaries", NS, name].history
    return [dict(version.get("status") or {}) for version in versions if version is not None]


def collapsed(values: list[Any]) -> list[Any]:
    """Consecutive repeats folded: the sequence of distinct values a history went through."""
    return [value for value, _ in itertools.groupby(values)]


def steps_visited(emulator: kmock.KubernetesEmulator, name: str, since: int = 0) -> list[int]:
    """The analysis steps the stored status went through while Progressing, from version ``since`` on."""
    history = status_history(emulator, name)[since:]
    return collapsed([int(s.get("currentStep", 0)) for s in history if s.get("phase") == "Progressing"])


def steps_in_order(visited: list[int]) -> bool:
    """Each stored step past the one before it, none repeated: a passing check and the weight step it
    allows are stored in one write, so a stored step is one or two past the previous one, never more."""
    return all(0 < after - before <= 2 for before, after in itertools.pairwise(visited))


def events(emulator: kmock.KubernetesEmulator) -> list[Obj]:
    """Every Event stored in the test namespace."""
    found = []
    for key in list(emulator.objects):
        resource, namespace, _ = key
        obj = emulator.objects[key]
        if resource.plural == "events" and namespace == NS and not obj.deleted:
            found.append(dict(obj.raw))
    return found


def event_messages(emulator: kmock.KubernetesEmulator, name: str) -> list[str]:
    return [e["message"] for e in events(emulator) if e["involvedObject"]["name"] == name]


async def setup_target(objects: KubeObjects, kind: str, name: str) -> None:
    await objects.apply(METRIC_TEMPLATE)
    await objects.apply(config_map(f"{name}-config", "blue"))
    await objects.apply(workload(kind, name, config=f"{name}-config"))


# --- what a real API server does and the emulator does not ---------------------------------------------


async def collect_garbage(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, owner_uid: str
) -> list[str]:
    """The garbage collector's part after an owner is deleted: delete every object with an
    ownerReference to ``owner_uid`` (kmock 0.8 has no garbage collection). Returns ``Kind/name`` of each."""
    collected = []
    for key in list(emulator.objects):
        obj = emulator.objects[key]
        if obj.deleted:
            continue
        raw = dict(obj.raw)
        owners = (raw.get("metadata") or {}).get("ownerReferences") or []
        if any(ref.get("uid") == owner_uid for ref in owners):
            meta = raw["metadata"]
            await objects.delete(raw["apiVersion"], raw["kind"], meta.get("namespace") or "", meta["name"])
            collected.append(f"{raw['kind']}/{meta['name']}")
    return collected


WRITES = ("POST", "PUT", "PATCH", "DELETE")


def writes(emulator: kmock.KubernetesEmulator, since: int = 0) -> list[str]:
    """``METHOD path`` of every write request the emulator received from call number ``since`` on
    (``len(emulator.calls)`` before), Events excluded (they are records, not state)."""
    calls: list[tuple[str, str]] = emulator.calls  # type: ignore[attr-defined]
    return [
        f"{method} {path}" for method, path in calls[since:] if method in WRITES and "/events" not in path
    ]
