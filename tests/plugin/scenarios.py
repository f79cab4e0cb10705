"""Rollouts frozen at interesting moments, as the objects the operator leaves in the cluster: the Canary
with its status, the primary and canary Deployments with pods, the router object and the Canary's events.

All times are relative to ``NOW`` so golden outputs are stable (the commands get ``--now NOW``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import kmock

from canaryctl.engine.clock import from_rfc3339, to_rfc3339
from canaryctl.engine.revision import revision_hash
from canaryctl.operator.workloads import comparable_template

Obj = dict[str, Any]

NOW = "2026-11-23T12:00:00Z"
NAMESPACE = "test"
IMAGE = "ghcr.io/stefanprodan/podinfo"
PLURALS = {
    "Canary": "canaryctl.dev/v1beta1/canaries",
    "Deployment": "apps/v1/deployments",
    "Pod": "v1/pods",
    "Event": "v1/events",
    "TrafficSplit": "split.smi-spec.io/v1alpha4/trafficsplits",
    "VirtualService": "networking.istio.io/v1beta1/virtualservices",
}


def ago(seconds: float) -> str:
    return to_rfc3339(from_rfc3339(NOW) - timedelta(seconds=seconds))


METRICS = [
    {"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}},
    {"name": "request-duration", "interval": "1m", "thresholdRange": {"max": 500}},
]
WEBHOOKS = [
    {"name": "acceptance-test", "type": "pre-rollout", "url": "http://loadtester.test/"},
    {
        "name": "load-test",
        "url": "http://loadtester.test/",
        "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"},
    },
]


def canary(name: str, analysis: Obj, status: Obj, provider: str | None = None) -> Obj:
    spec: Obj = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "service": {"port": 9898},
        "analysis": {"interval": "1m", "threshold": 5, "metrics": METRICS, "webhooks": WEBHOOKS, **analysis},
    }
    if provider:
        spec["provider"] = provider
    return {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
        "status": status,
    }


def deployment(name: str, app: str, version: str, replicas: int, ready: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "podinfod", "image": f"{IMAGE}:{version}"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "availableReplicas": ready,
        },
    }


def revision(name: str, version: str) -> str:
    """The revision the operator computes for target ``name`` running ``version`` (no tracked configs)."""
    target = deployment(name, name, version, 1, 1)
    return revision_hash(comparable_template(target["spec"]["template"]), {})


def pod(name: str, app: str, ready: bool = True, restarts: int = 0) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
        "spec": {"containers": [{"name": "podinfod"}]},
        "status": {
            "phase": "Running" if ready else "Pending",
            "containerStatuses": [{"name": "podinfod", "ready": ready, "restartCount": restarts}],
        },
    }


def workloads(name: str, canary_pods: int, canary_version: str = "6.0.1") -> list[Obj]:
    """``<name>-primary`` with two pods on 6.0.0; ``<name>`` (the canary) with ``canary_pods`` pods."""
    objs = [
        deployment(f"{name}-primary", f"{name}-primary", "6.0.0", 2, 2),
        deployment(name, name, canary_version, canary_pods, canary_pods),
        pod(f"{name}-primary-6f9c7-a1b2c", f"{name}-primary"),
        pod(f"{name}-primary-6f9c7-d3e4f", f"{name}-primary", restarts=1),
    ]
    objs += [pod(f"{name}-7d4b9-{i}x9z{i}", name) for i in range(canary_pods)]
    return objs


def traffic_split(name: str, weight: int, matches: bool = False) -> Obj:
    spec: Obj = {
        "service": name,
        "backends": [
            {"service": f"{name}-primary", "weight": 100 - weight},
            {"service": f"{name}-canary", "weight": weight},
        ],
    }
    if matches:
        spec["matches"] = [{"kind": "HTTPRouteGroup", "name": name}]
    return {
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def event(canary_name: str, seconds_ago: float, message: str, warning: bool = False) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{canary_name}.{int(seconds_ago)}", "namespace": NAMESPACE},
        "involvedObject": {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "Canary",
            "name": canary_name,
            "namespace": NAMESPACE,
        },
        "reason": "Synced",
        "message": message,
        "type": "Warning" if warning else "Normal",
        "lastTimestamp": ago(seconds_ago),
    }


def passing(success: float = 99.87, latency: float = 212.4) -> list[Obj]:
    return [
        {"name": "request-success-rate", "value": success, "min": 99, "verdict": "pass", "time": ago(20)},
        {"name": "request-duration", "value": latency, "max": 500, "verdict": "pass", "time": ago(20)},
    ]


LOAD_TEST_OK = {"name": "load-test", "type": "rollout", "success": True, "statusCode": 200, "time": ago(20)}
PRE_ROLLOUT_OK = {"name": "acceptance-test", "type": "pre-rollout", "success": True, "statusCode": 200}


def _progressing(name: str, **extra: Any) -> Obj:
    return {
        "phase": "Progressing",
        "lastTransitionTime": ago(400),
        "preRolloutDone": True,
        "lastAppliedSpec": revision(name, "6.0.1"),
        "lastPromotedSpec": revision(name, "6.0.0"),
        **extra,
    }


def progressing() -> list[Obj]:
    """Canary by weights 10..50: step 6/10 (analysis at 30%), one failed check, next check in 40s."""
    status = _progressing(
        "podinfo",
        message="Check 0/1 passed",
        canaryWeight=30,
        failedChecks=1,
        currentStep=5,
        totalSteps=10,
        stepStartedAt=ago(80),
        lastAnalysisAt=ago(20),
        metrics=passing(),
        webhooks=[PRE_ROLLOUT_OK, LOAD_TEST_OK],
    )
    return [
        canary("podinfo", {"maxWeight": 50, "stepWeight": 10}, status),
        *workloads("podinfo", 1),
        traffic_split("podinfo", 30),
        event("podinfo", 400, "New revision detected! Scaling up podinfo.test"),
        event("podinfo", 300, "Advance podinfo.test canary weight 10"),
        event("podinfo", 200, "Advance podinfo.test canary weight 20"),
        event("podinfo", 140, "Halt advancement podinfo.test: request-duration 612.00 > 500", warning=True),
        event("podinfo", 80, "Advance podinfo.test canary weight 30"),
    ]


def ab_testing() -> list[Obj]:
    analysis = {"iterations": 10, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    status = _progressing(
        "abtest",
        message="Check 4/10 passed",
        headerRoute=True,
        iterations=4,
        currentStep=1,
        totalSteps=2,
        stepStartedAt=ago(300),
        lastAnalysisAt=ago(55),
        metrics=passing(),
        webhooks=[LOAD_TEST_OK],
    )
    return [
        canary("abtest", analysis, status),
        *workloads("abtest", 2),
        traffic_split("abtest", 100, matches=True),
        event("abtest", 300, "Advance abtest.test: routing matching requests to canary"),
    ]


def blue_green() -> list[Obj]:
    status = _progressing(
        "bluegreen",
        message="Check 2/5 passed",
        iterations=2,
        currentStep=0,
        totalSteps=3,
        stepStartedAt=ago(130),
        lastAnalysisAt=ago(10),
        metrics=passing(),
    )
    return [canary("bluegreen", {"iterations": 5}, status, provider="kubernetes"), *workloads("bluegreen", 2)]


def failed() -> list[Obj]:
    status = {
        "phase": "Failed",
        "message": "Canary failed! request-duration 812.30 > 500 (5 failed checks)",
        "failedChecks": 5,
        "currentStep": 3,
        "totalSteps": 10,
        "lastTransitionTime": ago(45),
        "lastAppliedSpec": revision("failing", "6.0.2"),
        "lastPromotedSpec": revision("failing", "6.0.0"),
        "metrics": [
            {"name": "request-success-rate", "value": 99.2, "min": 99, "verdict": "pass"},
            {
                "name": "request-duration",
                "value": 812.3,
                "max": 500,
                "verdict": "fail",
                "message": "812.30 > 500",
            },
        ],
        "webhooks": [LOAD_TEST_OK],
    }
    return [
        canary("failing", {"maxWeight": 50, "stepWeight": 10}, status),
        *workloads("failing", 0, "6.0.2"),
        traffic_split("failing", 0),
        event("failing", 50, "Halt advancement failing.test: request-duration 812.30 > 500", warning=True),
        event("failing", 45, "Canary failed! Scaling down failing.test", warning=True),
    ]


def fast_failed() -> list[Obj]:
    """Rolled back by fastFail at 10%, with no failed check: the reason is the error rate."""
    analysis = {"maxWeight": 50, "stepWeight": 10, "fastFail": {"period": "5s", "maxErrorRate": 10}}
    status = {
        "phase": "Failed",
        "message": "fastFail: canary error rate 31.0% over 52 requests exceeds 10%",
        "failedChecks": 0,
        "currentStep": 1,
        "totalSteps": 10,
        "lastTransitionTime": ago(30),
        "lastAppliedSpec": revision("hasty", "6.0.3"),
        "lastPromotedSpec": revision("hasty", "6.0.0"),
        "metrics": passing(),
    }
    return [
        canary("hasty", analysis, status),
        *workloads("hasty", 0, "6.0.3"),
        traffic_split("hasty", 0),
        event("hasty", 30, "fastFail: canary error rate 31.0% over 52 requests exceeds 10%", warning=True),
    ]


def succeeded() -> list[Obj]:
    status = {
        "phase": "Succeeded",
        "message": "Canary analysis completed successfully, promotion finished",
        "currentStep": 10,
        "totalSteps": 10,
        "lastTransitionTime": ago(3600 * 26),
        "lastAppliedSpec": revision("done", "6.0.0"),
        "lastPromotedSpec": revision("done", "6.0.0"),
        "metrics": passing(99.95, 180.0),
    }
    return [
        canary("done", {"maxWeight": 50, "stepWeight": 10}, status),
        *workloads("done", 0, "6.0.0"),
        traffic_split("done", 0),
        event("done", 3600 * 26, "Promotion completed! Scaling down done.test"),
    ]


def waiting_promotion() -> list[Obj]:
    hooks = [*WEBHOOKS, {"name": "approval", "type": "confirm-promotion", "url": "http://gate.test/approve"}]
    status = _progressing(
        "gated",
        phase="WaitingPromotion",
        message="Halt gated.test advancement waiting for promotion approval approval",
        canaryWeight=50,
        currentStep=10,
        totalSteps=10,
        stepStartedAt=ago(200),
        lastAnalysisAt=ago(30),
        metrics=passing(),
        webhooks=[
            LOAD_TEST_OK,
            {
                "name": "approval",
                "type": "confirm-promotion",
                "success": False,
                "statusCode": 403,
                "message": "gate closed",
            },
        ],
    )
    obj = canary("gated", {"maxWeight": 50, "stepWeight": 10}, status)
    obj["spec"]["analysis"]["webhooks"] = hooks
    return [obj, *workloads("gated", 1), traffic_split("gated", 50)]


STEPS = [
    {"setWeight": 20},
    {"analysis": {"iterations": 2}},
    {"fault": {"abort": {"httpStatus": 503, "percentage": 10}, "duration": "3m"}},
    {"pause": {"duration": "5m"}},
    {"setWeight": 50},
    {"pause": {}},
]


def steps_fault() -> list[Obj]:
    """Explicit steps, in the fault-injection step (3/6)."""
    status = _progressing(
        "custom",
        message="Step 3/6: fault on canary × 3 checks",
        canaryWeight=20,
        fault={"abort": {"httpStatus": 503, "percentage": 10}},
        currentStep=2,
        totalSteps=6,
        iterations=1,
        stepStartedAt=ago(70),
        lastAnalysisAt=ago(10),
        metrics=passing(97.1, 240.0),
    )
    status["metrics"][0].update(verdict="no-data", value=None, message="no data for request-success-rate")
    return [canary("custom", {"steps": STEPS}, status), *workloads("custom", 1), traffic_split("custom", 20)]


def paused(name: str = "held", by_user: bool = True) -> list[Obj]:
    """Explicit steps in the timed pause (step 4/6), 100s into it; paused by the user too."""
    status = _progressing(
        name,
        message="Rollout paused by user" if by_user else "Paused, 200s left",
        canaryWeight=20,
        paused=by_user,
        currentStep=3,
        totalSteps=6,
        stepStartedAt=ago(100),
        metrics=passing(),
    )
    return [canary(name, {"steps": STEPS}, status), *workloads(name, 1), traffic_split(name, 20)]


def timed_pause() -> list[Obj]:
    return paused("pausing", by_user=False)


SCENARIOS: dict[str, Callable[[], list[Obj]]] = {
    "progressing": progressing,
    "ab-testing": ab_testing,
    "blue-green": blue_green,
    "failed": failed,
    "fast-failed": fast_failed,
    "succeeded": succeeded,
    "waiting-promotion": waiting_promotion,
    "steps-fault": steps_fault,
    "paused": paused,
    "timed-pause": timed_pause,
}
CANARY_NAMES = {
    "progressing": "podinfo",
    "ab-testing": "abtest",
    "blue-green": "bluegreen",
    "failed": "failing",
    "fast-failed": "hasty",
    "succeeded": "done",
    "waiting-promotion": "gated",
    "steps-fault": "custom",
    "paused": "held",
    "timed-pause": "pausing",
}


def seed(emulator: kmock.KubernetesEmulator, objs: list[Obj]) -> None:
    for obj in objs:
        meta = obj["metadata"]
        emulator.objects[PLURALS[obj["kind"]], meta.get("namespace"), meta["name"]] = copy.deepcopy(obj)


def stored(emulator: kmock.KubernetesEmulator, kind: str, name: str) -> Obj:
    """The object as the emulator holds it now, as a plain dict (``raw``: without kmock's views)."""
    return copy.deepcopy(emulator.objects[PLURALS[kind], NAMESPACE, name].raw)
