"""The workload side as a user sees it through the operator: when a primary counts as ready, what a
promotion changes in the primary, how an existing Service is treated, how sizes and autoscalers follow
the target, what revertOnDeletion leaves behind, and that generated objects are kept as the spec says
without writing on idle ticks.

kmock's emulator has no garbage collector: where deletion matters, ``collect_garbage`` does what a real
API server's would after the Canary is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest

from canaryctl.api.models import API_VERSION
from canaryctl.operator.workloads import KEDA_PAUSED_REPLICAS, REVISION_ANNOTATION
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet
from tests.operator.conftest import StartOperator
from tests.operator.helpers import (
    NS,
    Obj,
    autoscaled,
    canary,
    collect_garbage,
    config_map,
    get_canary,
    invalid_conditions,
    setup_target,
    status_history,
    wait_for,
    wait_phase,
    workload,
    writes,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def get(objects: KubeObjects, api: str, kind: str, name: str) -> Obj:
    found = await objects.get(api, kind, NS, name)
    assert found is not None, f"{kind} {name} not found"
    return found


def phases(emulator: kmock.KubernetesEmulator, name: str) -> list[Any]:
    return [status.get("phase") for status in status_history(emulator, name)]


async def test_a_primary_whose_new_pods_are_not_available_is_not_promoted(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    """Mid-rollout the old ReplicaSet's pods are still available; they must not make the primary ready."""
    await setup_target(objects, "Deployment", "roll")
    await objects.apply(canary("roll"))
    await start_operator()
    await wait_phase(objects, "roll", "Initialized")
    kubelet.slow.add((NS, "roll-primary"))

    await objects.apply(workload("Deployment", "roll", image="app:v2", config="roll-config"))
    await wait_phase(objects, "roll", "Promoting")
    await asyncio.sleep(3)  # several ticks with the primary's new pods unavailable
    assert "Succeeded" not in phases(emulator, "roll")
    status = (await get_canary(objects, "roll"))["status"]
    assert status["phase"] == "Promoting"
    assert "old replicas pending termination" in status["message"]

    kubelet.slow.clear()
    done = await wait_phase(objects, "roll", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"


async def test_a_config_only_revision_restarts_the_primary_pods(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """Env vars from a ConfigMap are read at pod start: the primary's template must change."""
    await setup_target(objects, "Deployment", "cfg")
    await objects.apply(canary("cfg"))
    await start_operator()
    await wait_phase(objects, "cfg", "Initialized")
    before = (await get(objects, "apps/v1", "Deployment", "cfg-primary"))["spec"]["template"]

    await objects.apply(config_map("cfg-config", "green"))
    await wait_phase(objects, "cfg", "Progressing")
    done = await wait_phase(objects, "cfg", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    after = (await get(objects, "apps/v1", "Deployment", "cfg-primary"))["spec"]["template"]
    assert after != before
    assert after["metadata"]["annotations"][REVISION_ANNOTATION] == done["status"]["lastAppliedSpec"]
    assert after["spec"] == before["spec"]  # the same pods, restarted to read the new values


def user_service(name: str, selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"team": "shop"},
            "annotations": {"owner": "shop-team"},
        },
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


async def test_an_existing_apex_service_waits_for_the_primary_and_stays_the_users(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "shop")
    await objects.apply(user_service("shop", {"app": "shop"}))
    kubelet.stuck.add((NS, "shop-primary"))
    await objects.apply(canary("shop"))
    await start_operator()
    await wait_phase(objects, "shop", "Initializing")
    await asyncio.sleep(2)  # ticks while the primary has no ready pod

    apex = await get(objects, "v1", "Service", "shop")
    assert apex["spec"]["selector"] == {"app": "shop"}, "clients moved to a primary with no ready pod"

    kubelet.stuck.clear()
    await wait_phase(objects, "shop", "Initialized")
    apex = await get(objects, "v1", "Service", "shop")
    assert apex["spec"]["selector"] == {"app": "shop-primary"}
    assert not apex["metadata"].get("ownerReferences")
    assert apex["metadata"]["labels"] == {"team": "shop"}
    assert apex["metadata"]["annotations"] == {"owner": "shop-team"}

    uid = (await get_canary(objects, "shop"))["metadata"]["uid"]
    await objects.delete(API_VERSION, "Canary", NS, "shop")
    collected = await collect_garbage(emulator, objects, uid)
    assert "Service/shop-primary" in collected and "Deployment/shop-primary" in collected
    assert await objects.get("v1", "Service", NS, "shop") is not None, "the user's Service was collected"


async def test_revert_on_deletion_waits_for_the_target_at_the_primarys_size(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "back")
    manifest = canary("back")
    manifest["spec"]["revertOnDeletion"] = True
    await objects.apply(manifest)
    await start_operator()
    await wait_phase(objects, "back", "Initialized")
    # The primary grew since (kubectl scale, an autoscaler): the target must come back at that size.
    await objects.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "back-primary", "namespace": NS},
            "spec": {"replicas": 5},
        }
    )
    uid = (await get_canary(objects, "back"))["metadata"]["uid"]
    kubelet.stuck.add((NS, "back"))  # the target's pods take their time

    await objects.delete(API_VERSION, "Canary", NS, "back")

    async def scaled() -> bool:
        target = await get(objects, "apps/v1", "Deployment", "back")
        return bool(target["spec"]["replicas"] == 5)

    await wait_for(scaled, what="the target scaled to the primary's size")
    await asyncio.sleep(2)
    assert await objects.get(API_VERSION, "Canary", NS, "back") is not None, "finalized before ready"
    apex = await get(objects, "v1", "Service", "back")
    assert apex["spec"]["selector"] == {"app": "back-primary"}, "traffic moved to unready pods"

    kubelet.stuck.clear()

    async def deleted() -> bool:
        return await objects.get(API_VERSION, "Canary", NS, "back") is None

    await wait_for(deleted, what="the finalizer to finish")
    await collect_garbage(emulator, objects, uid)
    apex = await get(objects, "v1", "Service", "back")
    assert apex["spec"]["selector"] == {"app": "back"}
    assert await objects.get("apps/v1", "Deployment", NS, "back-primary") is None


async def test_the_targets_replicas_reach_the_primary(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """A GitOps change of the target's replicas wins over what the target ran before."""
    await setup_target(objects, "Deployment", "size")
    await objects.apply(canary("size"))
    await start_operator()
    await wait_phase(objects, "size", "Initialized")
    assert (await get(objects, "apps/v1", "Deployment", "size-primary"))["spec"]["replicas"] == 2

    bigger = workload("Deployment", "size", image="app:v2", config="size-config")
    bigger["spec"]["replicas"] = 4
    await objects.apply(bigger)
    done = await wait_phase(objects, "size", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    assert (await get(objects, "apps/v1", "Deployment", "size-primary"))["spec"]["replicas"] == 4
    assert (await get(objects, "apps/v1", "Deployment", "size"))["spec"]["replicas"] == 0


def hpa(name: str, minimum: int, maximum: int) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }


async def test_the_primary_hpa_follows_the_targets_on_promotion(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    await setup_target(objects, "Deployment", "auto")
    await objects.apply(hpa("auto", 2, 4))
    await objects.apply(autoscaled(canary("auto"), "HorizontalPodAutoscaler"))
    await start_operator()
    await wait_phase(objects, "auto", "Initialized")
    primary = await get(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "auto-primary")
    assert primary["spec"]["scaleTargetRef"]["name"] == "auto-primary"
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (2, 4)

    await objects.apply(hpa("auto", 3, 10))
    await objects.apply(workload("Deployment", "auto", image="app:v2", config="auto-config"))
    done = await wait_phase(objects, "auto", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    primary = await get(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "auto-primary")
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (3, 10)
    assert primary["spec"]["scaleTargetRef"]["name"] == "auto-primary"


def scaled_object(name: str, maximum: int) -> Obj:
    query = f'sum(rate(http_requests_total{{app="{name}"}}[1m]))'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 2,
            "maxReplicaCount": maximum,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "requests",
                    "metadata": {
                        "serverAddress": "http://prometheus:9090",
                        "threshold": "100",
                        "query": query,
                    },
                }
            ],
        },
    }


async def test_a_keda_scaled_object_is_cloned_paused_and_followed(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "keda")
    await objects.apply(scaled_object("keda", 4))
    await objects.apply(autoscaled(canary("keda"), "ScaledObject"))
    await start_operator()
    await wait_phase(objects, "keda", "Initialized")

    primary = await get(objects, "keda.sh/v1alpha1", "ScaledObject", "keda-primary")
    assert primary["spec"]["scaleTargetRef"] == {"name": "keda-primary"}
    query = primary["spec"]["triggers"][0]["metadata"]["query"]
    assert query == 'sum(rate(http_requests_total{app="keda-primary"}[1m]))'
    target = await get(objects, "keda.sh/v1alpha1", "ScaledObject", "keda")
    assert target["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "0"  # KEDA leaves it at zero

    await objects.apply(scaled_object("keda", 8))
    await objects.apply(workload("Deployment", "keda", image="app:v2", config="keda-config"))
    await wait_phase(objects, "keda", "Progressing")

    async def resumed() -> bool:
        found = await get(objects, "keda.sh/v1alpha1", "ScaledObject", "keda")
        return KEDA_PAUSED_REPLICAS not in (found["metadata"].get("annotations") or {})

    await wait_for(resumed, what="the target's ScaledObject resumed for the analysis")
    done = await wait_phase(objects, "keda", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    primary = await get(objects, "keda.sh/v1alpha1", "ScaledObject", "keda-primary")
    assert primary["spec"]["maxReplicaCount"] == 8
    target = await get(objects, "keda.sh/v1alpha1", "ScaledObject", "keda")
    assert target["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "0"
    messages = [s.get("message", "") for s in status_history(emulator, "keda")]
    assert not any("ScaledObject" in m for m in messages), messages


async def test_generated_objects_follow_the_spec_and_idle_ticks_write_nothing(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "keep")
    await objects.apply(canary("keep"))
    await start_operator()
    await wait_phase(objects, "keep", "Initialized")
    await asyncio.sleep(1)  # settle: the tick after initialization may still write

    start = len(emulator.calls)  # type: ignore[attr-defined]
    await asyncio.sleep(3)  # six ticks at a 500 ms interval
    assert writes(emulator, start) == []

    # A deleted generated Service and routing object, and a spec.service edit, are corrected.
    await objects.delete("v1", "Service", NS, "keep-canary")
    await objects.delete("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "keep")
    manifest = canary("keep")
    manifest["spec"]["service"] = {"port": 9090, "targetPort": 8080, "timeout": "7s"}
    await objects.apply(manifest)

    async def corrected() -> bool:
        services = [
            await objects.get("v1", "Service", NS, n) for n in ("keep", "keep-primary", "keep-canary")
        ]
        split = await objects.get("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "keep")
        policy = await objects.get("mesh.canaryctl.dev/v1alpha1", "TrafficPolicy", NS, "keep")
        return (
            all(s is not None and s["spec"]["ports"][0]["port"] == 9090 for s in services)
            and split is not None
            and policy is not None
            and policy["spec"].get("timeout") == "7s"
        )

    await wait_for(corrected, what="generated objects re-applied from the spec")
    assert (await get_canary(objects, "keep"))["status"]["phase"] == "Initialized"

    # An object edited behind canaryctl's back, the spec unchanged, is corrected too (each version of
    # it is compared once: what was found to cover the spec is remembered until the object changes).
    await asyncio.sleep(1.5)  # three idle ticks: each compares the objects as they now are
    edit = [{"op": "replace", "path": "/spec/timeout", "value": "1s"}]
    await objects.json_patch("mesh.canaryctl.dev/v1alpha1", "TrafficPolicy", NS, "keep", edit)

    async def restored() -> bool:
        policy = await objects.get("mesh.canaryctl.dev/v1alpha1", "TrafficPolicy", NS, "keep")
        return policy is not None and policy["spec"].get("timeout") == "7s"

    await wait_for(restored, what="the edited TrafficPolicy restored")


async def test_session_affinity_on_a_router_without_cookies_is_an_invalid_spec(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """Accepted and ignored would leave users believing clients stick; refuse it before any change."""
    await setup_target(objects, "Deployment", "sticky")
    manifest = canary("sticky", sessionAffinity={"cookieName": "canary-session"})
    manifest["spec"]["provider"] = "smi:v1alpha4"
    await objects.apply(manifest)
    await start_operator()

    conditions = await invalid_conditions(objects, "sticky")
    assert "router smi:v1alpha4 cannot express sessionAffinity" in conditions["InvalidSpec"]["message"]
    assert await objects.get("apps/v1", "Deployment", NS, "sticky-primary") is None
    assert await objects.get("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "sticky") is None
