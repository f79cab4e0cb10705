"""The operator end to end: real kopf, the real kubernetes client, the real engine and runner against
kmock's Kubernetes emulator; metrics from a loopback Prometheus stand-in whose answers each test scripts.
"""

from __future__ import annotations

import kmock
import pytest

from canaryctl.api.control import COMMAND_ANNOTATION, CommandKind, encode_command
from canaryctl.api.models import API_VERSION
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet, PrometheusStub
from tests.operator.conftest import StartOperator
from tests.operator.helpers import (
    METRIC_TEMPLATE,
    NS,
    Obj,
    canary,
    collapsed,
    config_map,
    event_messages,
    get_canary,
    invalid_conditions,
    setup_target,
    status_history,
    steps_in_order,
    steps_visited,
    wait_for,
    wait_phase,
    workload,
)

pytestmark = pytest.mark.asyncio


# --- lifecycle ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
async def test_workload_lifecycle(
    kind: str,
    objects: KubeObjects,
    kubelet: Kubelet,
    start_operator: StartOperator,
    emulator: kmock.KubernetesEmulator,
) -> None:
    await setup_target(objects, kind, "web")
    await objects.apply(canary("web", kind))
    await start_operator()

    await wait_phase(objects, "web", "Initialized")
    primary = await objects.get("apps/v1", kind, NS, "web-primary")
    assert primary is not None
    assert primary["spec"]["selector"]["matchLabels"] == {"app": "web-primary"}
    container = primary["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "web-config-primary"}}]
    copied = await objects.get("v1", "ConfigMap", NS, "web-config-primary")
    assert copied is not None and copied["data"] == {"COLOR": "blue"}
    selectors = {}
    for service in ("web", "web-primary", "web-canary"):
        found = await objects.get("v1", "Service", NS, service)
        assert found is not None, service
        assert found["spec"]["ports"][0] == {
            "name": "http",
            "port": 80,
            "targetPort": 8080,
            "protocol": "TCP",
        }
        selectors[service] = found["spec"]["selector"]
    assert selectors == {
        "web": {"app": "web-primary"},
        "web-primary": {"app": "web-primary"},
        "web-canary": {"app": "web"},
    }
    target = await objects.get("apps/v1", kind, NS, "web")
    assert target is not None
    if kind == "Deployment":
        assert target["spec"]["replicas"] == 0
    else:
        assert target["spec"]["template"]["spec"]["nodeSelector"] == {"canaryctl.dev/scale-to-zero": "true"}

    # A new revision through a config change alone: tracked by checksum.
    await objects.apply(config_map("web-config", "green"))
    await wait_phase(objects, "web", "Progressing")
    done = await wait_phase(objects, "web", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    copied = await objects.get("v1", "ConfigMap", NS, "web-config-primary")
    assert copied is not None and copied["data"] == {"COLOR": "green"}
    weights = [s.get("canaryWeight", 0) for s in status_history(emulator, "web")]
    assert 50 in weights and 100 in weights and weights[-1] == 0
    conditions = {c["type"]: c["status"] for c in done["status"]["conditions"]}
    assert conditions == {"Promoted": "True", "Ready": "True"}
    messages = event_messages(emulator, "web")
    assert "New revision detected! Scaling up web.test" in messages
    assert "Promotion completed! Scaling down web.test" in messages
    split = await objects.get("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "web")
    assert split is not None
    assert {b["service"]: b["weight"] for b in split["spec"]["backends"]} == {
        "web-primary": 100,
        "web-canary": 0,
    }


async def test_service_target_lifecycle(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """Traffic only: the target Service is the canary side; promotion copies its selector to -primary."""
    await objects.apply(METRIC_TEMPLATE)
    ports = [{"name": "http", "port": 80, "targetPort": 8080}]
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {"selector": {"app": "api-v1"}, "ports": ports},
    }
    await objects.apply(service)
    manifest = canary("api", "Service")
    manifest["spec"]["service"]["name"] = "api-apex"
    await objects.apply(manifest)
    await start_operator()
    await wait_phase(objects, "api", "Initialized")
    primary = await objects.get("v1", "Service", NS, "api-apex-primary")
    assert primary is not None and primary["spec"]["selector"] == {"app": "api-v1"}

    service["spec"]["selector"] = {"app": "api-v2"}
    await objects.apply(service)
    done = await wait_phase(objects, "api", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    primary = await objects.get("v1", "Service", NS, "api-apex-primary")
    assert primary is not None and primary["spec"]["selector"] == {"app": "api-v2"}


# --- failure paths -------------------------------------------------------------------------------------


async def test_failed_metrics_roll_back(
    objects: KubeObjects, kubelet: Kubelet, prometheus: PrometheusStub, start_operator: StartOperator
) -> None:
    prometheus.values["success_bad"] = 42.0
    await setup_target(objects, "Deployment", "bad")
    await objects.apply(canary("bad"))
    await start_operator()
    await wait_phase(objects, "bad", "Initialized")

    await objects.apply(workload("Deployment", "bad", image="app:v2", config="bad-config"))
    done = await wait_phase(objects, "bad", "Failed", "Succeeded")
    status = done["status"]
    assert status["phase"] == "Failed" and status["failedChecks"] == 2
    assert status["canaryWeight"] == 0
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Promoted": "False", "Ready": "False", "Stalled": "True"}
    target = await objects.get("apps/v1", "Deployment", NS, "bad")
    assert target is not None and target["spec"]["replicas"] == 0
    primary = await objects.get("apps/v1", "Deployment", NS, "bad-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"


async def test_progress_deadline_rolls_back(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    kubelet.stuck.add((NS, "slow"))  # the canary pods never become available
    await setup_target(objects, "Deployment", "slow")
    manifest = canary("slow")
    manifest["spec"]["progressDeadlineSeconds"] = 2
    await objects.apply(manifest)
    await start_operator()
    await wait_phase(objects, "slow", "Initialized")

    await objects.apply(workload("Deployment", "slow", image="app:v2", config="slow-config"))
    done = await wait_phase(objects, "slow", "Failed", "Succeeded")
    assert done["status"]["phase"] == "Failed"
    assert "Progress deadline exceeded" in done["status"]["message"]


async def test_invalid_canaries_do_not_stop_a_healthy_one(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    await setup_target(objects, "Deployment", "good")
    await objects.apply(canary("good"))
    await objects.apply(canary("broken", stepWeight=500))
    faulty = canary(
        "faulty",
        steps=[
            {"setWeight": 20},
            {"fault": {"abort": {"httpStatus": 503, "percentage": 100}, "duration": "5s"}},
        ],
    )
    faulty["spec"]["provider"] = "smi:v1alpha2"
    await objects.apply(faulty)
    serviceless = canary("serviceless")
    del serviceless["spec"]["service"]  # valid for Flagger's schema and ours; no router can work without it
    await objects.apply(serviceless)
    await start_operator()

    broken = await invalid_conditions(objects, "broken")
    assert broken["InvalidSpec"]["status"] == "True"
    assert "spec.analysis.stepWeight" in broken["InvalidSpec"]["message"]
    assert broken["Ready"]["status"] == "False"
    fault = await invalid_conditions(objects, "faulty")
    assert "router smi:v1alpha2" in fault["InvalidSpec"]["message"]
    assert "fault" in fault["InvalidSpec"]["message"]
    assert await objects.get("split.smi-spec.io/v1alpha2", "TrafficSplit", NS, "faulty") is None
    serviceless_conditions = await invalid_conditions(objects, "serviceless")
    assert "spec.service: not set" in serviceless_conditions["InvalidSpec"]["message"]

    await wait_phase(objects, "good", "Initialized")
    await objects.apply(workload("Deployment", "good", image="app:v2", config="good-config"))
    done = await wait_phase(objects, "good", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"


# --- control, restarts and peers -----------------------------------------------------------------------


async def test_manual_promote_through_the_annotation(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    await setup_target(objects, "Deployment", "gated")
    await objects.apply(canary("gated", steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]))
    await start_operator()
    await wait_phase(objects, "gated", "Initialized")
    await objects.apply(workload("Deployment", "gated", image="app:v2", config="gated-config"))

    async def paused() -> bool:
        status = (await get_canary(objects, "gated")).get("status") or {}
        return status.get("currentStep") == 1 and "Paused until promoted" in status.get("message", "")

    await wait_for(paused, what="the indefinite pause")
    annotations = {COMMAND_ANNOTATION: encode_command(CommandKind.PROMOTE, "first")}
    await objects.apply(
        {**canary("gated"), "metadata": {"name": "gated", "namespace": NS, "annotations": annotations}}
    )
    done = await wait_phase(objects, "gated", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["lastHandledCommand"] == "first"


async def test_restart_mid_rollout_resumes_at_the_same_step(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    await setup_target(objects, "Deployment", "long")
    await objects.apply(canary("long", stepWeight=25))  # 8 steps: weight 25, check, 50, check, ...
    first = await start_operator()
    await wait_phase(objects, "long", "Initialized")
    await objects.apply(workload("Deployment", "long", image="app:v2", config="long-config"))

    async def midway() -> bool:
        step: int = ((await get_canary(objects, "long")).get("status") or {}).get("currentStep", 0)
        return step >= 3

    await wait_for(midway, what="step 3")
    await first.stop()
    stopped_at = (await get_canary(objects, "long"))["status"]
    assert stopped_at["phase"] == "Progressing"

    await start_operator()
    done = await wait_phase(objects, "long", "Succeeded", "Failed", timeout=30)
    assert done["status"]["phase"] == "Succeeded"
    visited = steps_visited(emulator, "long")
    assert steps_in_order(visited), f"steps visited {visited}"
    progressing = [s for s in status_history(emulator, "long") if s.get("phase") == "Progressing"]
    weights = [w for w in collapsed([int(s.get("canaryWeight", 0)) for s in progressing]) if w]
    assert weights == [25, 50, 75, 100], f"weights {weights}"  # one step at a time, none repeated
    advances = [
        m for m in event_messages(emulator, "long") if m.startswith("Advance long.test canary weight")
    ]
    assert advances == [f"Advance long.test canary weight {w}" for w in (25, 50, 75, 100)]


async def test_two_peered_operators_only_one_acts(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "canaryctl"}}
    emulator.objects["kopf.dev/v1/clusterkopfpeerings", None, "canaryctl"] = peering
    await setup_target(objects, "Deployment", "ha")
    await objects.apply(canary("ha"))
    leader = await start_operator(peering="canaryctl", priority=100)
    standby = await start_operator(peering="canaryctl", priority=10)

    await wait_phase(objects, "ha", "Initialized")
    await objects.apply(workload("Deployment", "ha", image="app:v2", config="ha-config"))
    await wait_phase(objects, "ha", "Succeeded")
    assert leader.operator.ticks > 0 and standby.operator.ticks == 0

    await leader.stop()  # a clean exit removes its peering record: the standby takes over
    await objects.apply(workload("Deployment", "ha", image="app:v3", config="ha-config"))
    await wait_phase(objects, "ha", "Progressing")
    assert standby.operator.ticks > 0


async def test_revert_on_deletion_gives_the_target_its_traffic_back(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    await setup_target(objects, "Deployment", "gone")
    manifest = canary("gone")
    manifest["spec"]["revertOnDeletion"] = True
    await objects.apply(manifest)
    await start_operator()
    await wait_phase(objects, "gone", "Initialized")
    assert "canaryctl.dev/finalizer" in (await get_canary(objects, "gone"))["metadata"]["finalizers"]

    await objects.delete(API_VERSION, "Canary", NS, "gone")

    async def deleted() -> bool:
        return await objects.get(API_VERSION, "Canary", NS, "gone") is None

    await wait_for(deleted, what="the finalizer to finish")
    target = await objects.get("apps/v1", "Deployment", NS, "gone")
    assert target is not None and target["spec"]["replicas"] == 2
    apex = await objects.get("v1", "Service", NS, "gone")
    assert apex is not None and apex["spec"]["selector"] == {"app": "gone"}
