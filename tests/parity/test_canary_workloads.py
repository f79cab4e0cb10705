"""Flagger's pkg/canary tests (fluxcd/flagger) for what the workload side does, expressed against
canaryctl's ``KubeWorkloads`` over an in-memory API that applies as server-side apply does. Each test
names the Flagger test it mirrors; every object left in the store is validated against its real schema.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from canaryctl.api.models import Canary
from canaryctl.engine.types import WorkloadOp
from canaryctl.operator.workloads import (
    KEDA_PAUSED_REPLICAS,
    REVISION_ANNOTATION,
    KubeWorkloads,
    TargetNotReady,
    primary_query,
    workload_readiness,
)
from tests.providers.routers.cases import UID, InMemoryObjects
from tests.schemas.validation import validate

NS = "default"
Obj = dict[str, Any]


def deployment(name: str = "podinfo", image: str = "podinfo:v1", replicas: int = 1) -> Obj:
    labels = {"name": name, "app.kubernetes.io/test-label-1": "test-label-value-1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels,
            "annotations": {"app.kubernetes.io/test-annotation-1": "test-annotation-value-1"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"name": name}},
            "template": {
                "metadata": {"labels": {"name": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfo",
                            "image": image,
                            "envFrom": [{"configMapRef": {"name": "podinfo-config-env"}}],
                        }
                    ]
                },
            },
        },
    }


def config_map(color: str) -> Obj:
    meta = {"name": "podinfo-config-env", "namespace": NS}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"color": color}}


def hpa(max_replicas: int = 4, utilization: int = 99) -> Obj:
    target = {"type": "Utilization", "averageUtilization": utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def scaled_object(polling: int = 10, query: str = 'sum(rate(http_requests_total{app="podinfo"}[2m]))') -> Obj:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "podinfo",
            "namespace": NS,
            "annotations": {"scaledobject.keda.sh/transfer-hpa-ownership": "true"},
        },
        "spec": {
            "scaleTargetRef": {"name": "podinfo"},
            "pollingInterval": polling,
            "minReplicaCount": 1,
            "maxReplicaCount": 4,
            "advanced": {"horizontalPodAutoscalerConfig": {"name": "podinfo"}},
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


def make_canary(autoscaler: str | None = None, **limits: int) -> Canary:
    spec: Obj = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "10s", "stepWeight": 10, "maxWeight": 50},
    }
    if autoscaler is not None:
        api = "autoscaling/v2" if autoscaler == "HorizontalPodAutoscaler" else "keda.sh/v1alpha1"
        spec["autoscalerRef"] = {"apiVersion": api, "kind": autoscaler, "name": "podinfo"}
        if limits:
            spec["autoscalerRef"]["primaryScalerReplicas"] = limits
    return Canary.model_validate(
        {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": NS, "uid": UID},
            "spec": spec,
        }
    )


def run(workloads: KubeWorkloads, canary: Canary, *ops: WorkloadOp) -> None:
    for op in ops:
        asyncio.run(workloads.apply(canary, op))


def stored(objects: InMemoryObjects, api: str, kind: str, name: str) -> Obj:
    found = objects.store.get((api, kind, NS, name))
    assert found is not None, f"{kind} {name} not stored"
    return found


def validate_store(objects: InMemoryObjects) -> None:
    for obj in objects.store.values():
        validate(obj)


@pytest.fixture()
def objects() -> InMemoryObjects:
    return InMemoryObjects(deployment(), config_map("blue"))


# --- deployment_ready_test.go / daemonset_ready_test.go -------------------------------------------------


def ready(kind: str, desired: int | None, threshold: int = 100, generation: int = 1, **status: int) -> Any:
    spec = {"replicas": desired} if desired is not None else {}
    obj = {"kind": kind, "metadata": {"name": "podinfo", "namespace": NS, "generation": generation}}
    return workload_readiness({**obj, "spec": spec, "status": {"observedGeneration": 1, **status}}, threshold)


def test_deployment_readiness() -> None:
    """TestDeploymentController_isDeploymentReady (deployment_ready_test.go)."""
    assert "generation" in ready("Deployment", 1, generation=2).message
    assert ready("Deployment", 1, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1).ready
    waiting = ready("Deployment", 2, updatedReplicas=1)
    assert not waiting.ready and "1 of 2 updated" in waiting.message
    old = ready("Deployment", 1, updatedReplicas=1, replicas=2, availableReplicas=2)
    assert not old.ready and "pending termination" in old.message
    unavailable = ready("Deployment", 2, updatedReplicas=2, replicas=2, availableReplicas=1)
    assert not unavailable.ready and "available" in unavailable.message


def test_deployment_readiness_threshold() -> None:
    """TestDeploymentController_isDeploymentReady_readyThreshold (deployment_ready_test.go)."""
    assert "generation" in ready("Deployment", 1, threshold=50, generation=2).message
    assert ready("Deployment", 4, threshold=50, replicas=4, updatedReplicas=4, availableReplicas=2).ready
    short = ready("Deployment", 4, threshold=50, replicas=4, updatedReplicas=4, availableReplicas=1)
    assert not short.ready and "available" in short.message


def test_daemonset_readiness() -> None:
    """TestDaemonSetController_isDaemonSetReady (daemonset_ready_test.go)."""
    assert "generation" in ready("DaemonSet", None, generation=2).message
    assert ready(
        "DaemonSet", None, updatedNumberScheduled=1, desiredNumberScheduled=1, numberAvailable=1
    ).ready
    new = ready("DaemonSet", None, updatedNumberScheduled=0, desiredNumberScheduled=1, numberAvailable=1)
    assert not new.ready and "0 of 1 updated" in new.message
    gone = ready("DaemonSet", None, updatedNumberScheduled=1, desiredNumberScheduled=1, numberAvailable=0)
    assert not gone.ready and "available" in gone.message


def test_daemonset_readiness_threshold() -> None:
    """TestDaemonSetController_isDaemonSetReady_readyThreshold (daemonset_ready_test.go)."""
    counts = {"updatedNumberScheduled": 4, "desiredNumberScheduled": 4}
    assert ready("DaemonSet", None, threshold=50, numberAvailable=2, **counts).ready
    assert not ready("DaemonSet", None, threshold=50, numberAvailable=1, **counts).ready


# --- deployment_controller_test.go ------------------------------------------------------------------------


def test_initialize_creates_the_primary_with_consistent_naming(objects: InMemoryObjects) -> None:
    """TestDeploymentController_Sync_ConsistentNaming (deployment_controller_test.go)."""
    workloads = KubeWorkloads(objects)
    run(workloads, make_canary(), WorkloadOp.INITIALIZE)
    primary = stored(objects, "apps/v1", "Deployment", "podinfo-primary")
    assert primary["spec"]["selector"]["matchLabels"] == {"name": "podinfo-primary"}
    assert primary["spec"]["template"]["metadata"]["labels"]["name"] == "podinfo-primary"
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v1"
    assert stored(objects, "v1", "ConfigMap", "podinfo-config-env-primary")["data"] == {"color": "blue"}
    assert primary["spec"]["replicas"] == 1
    validate_store(objects)


def test_promote_copies_template_labels_and_configs(objects: InMemoryObjects) -> None:
    """TestDeploymentController_Promote (deployment_controller_test.go), plus the fresh pod-template
    stamp Flagger's makeAnnotations writes on every promotion."""
    workloads = KubeWorkloads(objects)
    canary = make_canary()
    run(workloads, canary, WorkloadOp.INITIALIZE)
    before = copy.deepcopy(stored(objects, "apps/v1", "Deployment", "podinfo-primary"))

    asyncio.run(objects.apply(config_map("yellow")))  # a config-only revision
    run(workloads, canary, WorkloadOp.PROMOTE)
    primary = stored(objects, "apps/v1", "Deployment", "podinfo-primary")
    assert primary["metadata"]["labels"]["app.kubernetes.io/test-label-1"] == "test-label-value-1"
    assert primary["metadata"]["labels"]["name"] == "podinfo-primary"
    assert stored(objects, "v1", "ConfigMap", "podinfo-config-env-primary")["data"] == {"color": "yellow"}
    stamps = [
        t["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION] for t in (before, primary)
    ]
    assert stamps[0] != stamps[1], "the primary's pods would keep the old config"

    asyncio.run(objects.apply(deployment(image="podinfo:v2")))
    run(workloads, canary, WorkloadOp.PROMOTE)
    primary = stored(objects, "apps/v1", "Deployment", "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"
    validate_store(objects)


def test_scale_to_zero_and_back(objects: InMemoryObjects) -> None:
    """TestDeploymentController_ScaleToZero (deployment_controller_test.go) and ScaleFromZero's order:
    the target's own replicas, else the primary's."""
    workloads = KubeWorkloads(objects)
    canary = make_canary()
    run(workloads, canary, WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_DOWN)
    assert stored(objects, "apps/v1", "Deployment", "podinfo")["spec"]["replicas"] == 0

    asyncio.run(objects.apply({**deployment(), "spec": {"replicas": 0}}))
    stored(objects, "apps/v1", "Deployment", "podinfo-primary")["spec"]["replicas"] = 3
    run(workloads, canary, WorkloadOp.SCALE_CANARY_UP)
    assert stored(objects, "apps/v1", "Deployment", "podinfo")["spec"]["replicas"] == 3

    run(workloads, canary, WorkloadOp.SCALE_CANARY_DOWN)
    asyncio.run(objects.apply(deployment(replicas=5)))  # someone set the target's replicas
    run(workloads, canary, WorkloadOp.SCALE_CANARY_UP)
    assert stored(objects, "apps/v1", "Deployment", "podinfo")["spec"]["replicas"] == 5
    validate_store(objects)


def test_finalize_scales_the_target_to_the_primarys_size(objects: InMemoryObjects) -> None:
    """TestDeploymentController_Finalize (deployment_controller_test.go): revert scales the target to
    the primary's current size, and gives it the apex only once its pods are ready."""
    workloads = KubeWorkloads(objects)
    canary = make_canary()
    run(workloads, canary, WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_DOWN)
    stored(objects, "apps/v1", "Deployment", "podinfo-primary")["spec"]["replicas"] = 4
    with pytest.raises(TargetNotReady):
        run(workloads, canary, WorkloadOp.REVERT)
    target = stored(objects, "apps/v1", "Deployment", "podinfo")
    assert target["spec"]["replicas"] == 4
    assert stored(objects, "v1", "Service", "podinfo")["spec"]["selector"] == {"name": "podinfo-primary"}

    status = {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4}
    target["status"] = status
    run(workloads, canary, WorkloadOp.REVERT)
    apex = stored(objects, "v1", "Service", "podinfo")
    assert apex["spec"]["selector"] == {"name": "podinfo"}
    assert apex["metadata"]["ownerReferences"] == []  # outlives the Canary
    validate_store(objects)


# --- hpa_reconciler_test.go / scaled_object_reconciler_test.go ---------------------------------------------


def test_reconcile_primary_hpa() -> None:
    """Test_reconcilePrimaryHpaV2 (hpa_reconciler_test.go)."""
    objects = InMemoryObjects(deployment(), config_map("blue"), hpa())
    workloads = KubeWorkloads(objects)
    run(workloads, make_canary("HorizontalPodAutoscaler"), WorkloadOp.INITIALIZE)
    primary = stored(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-primary")
    assert primary["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 99
    assert primary["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"

    asyncio.run(objects.apply(hpa(max_replicas=10, utilization=50)))
    run(workloads, make_canary("HorizontalPodAutoscaler"), WorkloadOp.INITIALIZE)  # init: create only
    primary = stored(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-primary")
    assert primary["spec"]["maxReplicas"] == 4
    run(workloads, make_canary("HorizontalPodAutoscaler"), WorkloadOp.PROMOTE)
    primary = stored(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-primary")
    assert primary["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50
    assert primary["spec"]["maxReplicas"] == 10

    run(workloads, make_canary("HorizontalPodAutoscaler", minReplicas=2, maxReplicas=15), WorkloadOp.PROMOTE)
    primary = stored(objects, "autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-primary")
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (2, 15)
    validate_store(objects)


def test_reconcile_primary_scaled_object() -> None:
    """Test_reconcilePrimaryScaledObject (scaled_object_reconciler_test.go)."""
    objects = InMemoryObjects(deployment(), config_map("blue"), scaled_object())
    workloads = KubeWorkloads(objects)
    run(workloads, make_canary("ScaledObject"), WorkloadOp.INITIALIZE)
    primary = stored(objects, "keda.sh/v1alpha1", "ScaledObject", "podinfo-primary")
    assert primary["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    assert primary["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == "podinfo-primary"
    assert primary["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"
    assert (primary["spec"]["pollingInterval"], primary["spec"]["minReplicaCount"]) == (10, 1)
    query = primary["spec"]["triggers"][0]["metadata"]["query"]
    assert query == 'sum(rate(http_requests_total{app="podinfo-primary"}[2m]))'

    asyncio.run(objects.apply(scaled_object(20, 'sum(rate(http_requests_total{app="podinfo-canary"}[10m]))')))
    run(workloads, make_canary("ScaledObject"), WorkloadOp.PROMOTE)
    primary = stored(objects, "keda.sh/v1alpha1", "ScaledObject", "podinfo-primary")
    assert primary["spec"]["pollingInterval"] == 20
    query = primary["spec"]["triggers"][0]["metadata"]["query"]
    assert query == 'sum(rate(http_requests_total{app="podinfo-primary"}[10m]))'

    run(workloads, make_canary("ScaledObject", minReplicas=2, maxReplicas=15), WorkloadOp.PROMOTE)
    primary = stored(objects, "keda.sh/v1alpha1", "ScaledObject", "podinfo-primary")
    assert (primary["spec"]["minReplicaCount"], primary["spec"]["maxReplicaCount"]) == (2, 15)
    validate_store(objects)


def test_pause_and_resume_the_target_scaled_object() -> None:
    """Test_pauseScaledObject and Test_resumeScaledObject (scaled_object_reconciler_test.go)."""
    objects = InMemoryObjects(deployment(), config_map("blue"), scaled_object())
    workloads = KubeWorkloads(objects)
    canary = make_canary("ScaledObject")
    run(workloads, canary, WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_DOWN)
    target = stored(objects, "keda.sh/v1alpha1", "ScaledObject", "podinfo")
    assert target["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "0"
    run(workloads, canary, WorkloadOp.SCALE_CANARY_UP)
    target = stored(objects, "keda.sh/v1alpha1", "ScaledObject", "podinfo")
    assert KEDA_PAUSED_REPLICAS not in target["metadata"]["annotations"]
    assert target["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    validate_store(objects)


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ('{app="podinfo"}', '{app="podinfo-primary"}'),
        ('{app="podinfo-canary"}', '{app="podinfo-primary"}'),
        ('{app="podinfo-canary", svc="podinfo"}', '{app="podinfo-primary", svc="podinfo-primary"}'),
        ('{app="podinfo-primary"}', '{app="podinfo-primary"}'),
    ],
)
def test_primary_scaled_object_queries(query: str, want: str) -> None:
    """Test_setPrimaryScaledObjectQueries (scaled_object_reconciler_test.go)."""
    assert primary_query(query, "podinfo") == want


# --- router/kubernetes_default_test.go ----------------------------------------------------------------------


def test_service_router_create(objects: InMemoryObjects) -> None:
    """TestServiceRouter_Create (pkg/router/kubernetes_default_test.go)."""
    run(KubeWorkloads(objects), make_canary(), WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_DOWN)
    selectors = {
        name: stored(objects, "v1", "Service", name)["spec"]["selector"]
        for name in ("podinfo", "podinfo-primary", "podinfo-canary")
    }
    assert selectors == {
        "podinfo": {"name": "podinfo-primary"},
        "podinfo-primary": {"name": "podinfo-primary"},
        "podinfo-canary": {"name": "podinfo"},
    }
    port = stored(objects, "v1", "Service", "podinfo")["spec"]["ports"][0]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 9898, 9898)
    validate_store(objects)


def test_service_router_update_keeps_a_users_service_the_users() -> None:
    """TestServiceRouter_Update and TestServiceRouter_isOwnedByCanary (kubernetes_default_test.go):
    an existing Service gets its selector and port, never an owner, labels or annotations."""
    user = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"team": "a"}},
        "spec": {"selector": {"name": "podinfo"}, "ports": [{"name": "http", "port": 9898}]},
    }
    objects = InMemoryObjects(deployment(), config_map("blue"), user)  # written by another manager
    workloads = KubeWorkloads(objects)
    run(workloads, make_canary(), WorkloadOp.INITIALIZE)
    assert stored(objects, "v1", "Service", "podinfo")["spec"]["selector"] == {"name": "podinfo"}
    run(workloads, make_canary(), WorkloadOp.SCALE_CANARY_DOWN)
    apex = stored(objects, "v1", "Service", "podinfo")
    assert apex["spec"]["selector"] == {"name": "podinfo-primary"}
    assert "ownerReferences" not in apex["metadata"]
    assert apex["metadata"]["labels"] == {"team": "a"}
    validate_store(objects)


def test_service_router_reconcile_writes_only_drift(objects: InMemoryObjects) -> None:
    """TestServiceRouter_Update (kubernetes_default_test.go): an unchanged Service is not updated, a
    changed port is."""
    workloads = KubeWorkloads(objects)
    run(workloads, make_canary(), WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_DOWN)
    objects.log.clear()
    asyncio.run(workloads.reconcile(make_canary()))
    assert objects.log == []
    canary = make_canary()
    canary.spec.service.port = 8080
    asyncio.run(workloads.reconcile(canary))
    assert sorted(objects.log) == [
        "apply Service/podinfo",
        "apply Service/podinfo-canary",
        "apply Service/podinfo-primary",
    ]
    validate_store(objects)
