"""Knative: a Canary over a Knative Service (Flagger's ``knative`` provider) tracks the Service's revisions
and routes between them through its traffic block, in a Service Knative Serving's published CRD accepts.

The Objects port keeps the user's Service whole and merges what canaryctl applies into it (as
server-side apply does), so what is validated is the Service Knative would see."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import yaml

from canaryctl.api.lint import lint_sources
from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState, WorkloadOp
from canaryctl.operator.workloads import KubeWorkloads
from canaryctl_providers.routers import UnsupportedRoutes, router_for, spec_problem, unsupported_steps
from canaryctl_providers.routers.common import Obj
from tests.providers.routers.cases import AB_MATCH, NS, InMemoryObjects
from tests.schemas.validation import validate

SERVING = "serving.knative.dev/v1"

# Flagger's own knative e2e Canary (test/knative/test-canary.sh), only the apiVersion changed.
FLAGGER_KNATIVE_CANARY = f"""
apiVersion: canaryctl.dev/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: {NS}
spec:
  provider: knative
  targetRef:
    apiVersion: serving.knative.dev/v1
    kind: Service
    name: podinfo
  progressDeadlineSeconds: 60
  analysis:
    interval: 15s
    threshold: 15
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
         max: 500
      interval: 1m
    webhooks:
      - name: load-test
        url: http://flagger-loadtester.test/
        timeout: 5s
        metadata:
          type: cmd
          cmd: "hey -z 1m -q 5 -c 2 http://podinfo.test"
          logCmdOutput: "true"
"""


def knative_service(latest: str) -> Obj:
    """The user's Knative Service as Knative Serving reports it: ``latest`` is its newest revision."""
    container = {"image": "ghcr.io/stefanprodan/podinfo:6.0.0", "ports": [{"containerPort": 9898}]}
    return {
        "apiVersion": SERVING,
        "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"template": {"spec": {"containers": [container]}}},
        "status": {"latestCreatedRevisionName": latest},
    }


def revision(name: str, ready: bool = True) -> Obj:
    condition = {"type": "Ready", "status": "True" if ready else "False", "message": "pulling image"}
    return {
        "apiVersion": SERVING,
        "kind": "Revision",
        "metadata": {"name": name, "namespace": NS},
        "status": {"conditions": [condition]},
    }


def canary() -> Canary:
    return Canary.model_validate(yaml.safe_load(FLAGGER_KNATIVE_CANARY))


def stored_service(objects: InMemoryObjects) -> Obj:
    found = asyncio.run(objects.get(SERVING, "Service", NS, "podinfo"))
    assert found is not None
    assert validate(found) == ["knative"]  # the Service Knative would see after canaryctl's writes
    return found


def split(service: Obj) -> dict[str, int]:
    """Revision (``latest`` for the latest-revision target) → percent."""
    return {t.get("revisionName", "latest"): t["percent"] for t in service["spec"]["traffic"]}


def new_revision(objects: InMemoryObjects, name: str, ready: bool = True) -> None:
    """What Knative Serving does when the user changes the Service's template."""
    key = (SERVING, "Service", NS, "podinfo")
    objects.store[key]["status"]["latestCreatedRevisionName"] = name
    objects.store[SERVING, "Revision", NS, name] = revision(name, ready)


def test_flaggers_knative_canary_lints_clean_without_spec_service() -> None:
    result = lint_sources([("canary.yaml", FLAGGER_KNATIVE_CANARY)])
    assert result.errors == [] and result.ok, result.errors
    assert unsupported_steps(canary(), router_for("knative", InMemoryObjects())) is None


def test_lint_pairs_the_knative_router_with_a_knative_target() -> None:
    for wrong in (
        FLAGGER_KNATIVE_CANARY.replace("provider: knative", "provider: istio"),
        FLAGGER_KNATIVE_CANARY.replace("apiVersion: serving.knative.dev/v1", "apiVersion: apps/v1").replace(
            "kind: Service", "kind: Deployment"
        ),
    ):
        result = lint_sources([("canary.yaml", wrong)])
        assert [(e.field_path, e.line) for e in result.errors if e.severity == "error"] == [
            ("spec.provider", 8)
        ]


def test_a_rollout_follows_the_revisions_and_splits_between_them() -> None:
    objects = InMemoryObjects(knative_service("podinfo-00001"), revision("podinfo-00001"))
    workloads, router, subject = KubeWorkloads(objects), router_for("knative", objects), canary()

    assert asyncio.run(workloads.revision(subject)).hash == "podinfo-00001"
    assert not asyncio.run(workloads.readiness(subject, primary=True)).ready  # no primary chosen yet
    asyncio.run(workloads.apply(subject, WorkloadOp.INITIALIZE))
    asyncio.run(router.apply(subject, RouteState()))
    service = stored_service(objects)
    assert service["metadata"]["annotations"] == {"flagger.app/primary-revision": "podinfo-00001"}
    assert split(service) == {"latest": 0, "podinfo-00001": 100}
    assert service["spec"]["template"] == knative_service("")["spec"]["template"]  # the user's, untouched
    assert asyncio.run(workloads.readiness(subject, primary=True)).ready

    new_revision(objects, "podinfo-00002", ready=False)
    assert asyncio.run(workloads.revision(subject)).hash == "podinfo-00002"
    waiting = asyncio.run(workloads.readiness(subject, primary=False))
    assert not waiting.ready and "podinfo-00002 is not ready: pulling image" in waiting.message
    objects.store[SERVING, "Revision", NS, "podinfo-00002"] = revision("podinfo-00002")
    assert asyncio.run(workloads.readiness(subject, primary=False)).ready
    for op in (WorkloadOp.SCALE_CANARY_UP, WorkloadOp.SCALE_CANARY_DOWN):  # Knative scales revisions
        asyncio.run(workloads.apply(subject, op))
    asyncio.run(router.apply(subject, RouteState(canary_weight=30)))
    assert split(stored_service(objects)) == {"latest": 30, "podinfo-00001": 70}

    asyncio.run(workloads.apply(subject, WorkloadOp.PROMOTE))
    asyncio.run(router.apply(subject, RouteState()))
    service = stored_service(objects)
    assert service["metadata"]["annotations"] == {"flagger.app/primary-revision": "podinfo-00002"}
    assert split(service) == {"latest": 0, "podinfo-00002": 100}
    writes = len(objects.log)
    asyncio.run(router.apply(subject, RouteState()))
    assert len(objects.log) == writes, "an unchanged traffic block is not written again"

    asyncio.run(workloads.apply(subject, WorkloadOp.REVERT))  # revertOnDeletion: Knative routes alone
    service = stored_service(objects)
    assert split(service) == {"latest": 100}
    assert "flagger.app/primary-revision" not in (service["metadata"].get("annotations") or {})


def test_routing_before_initialization_or_without_a_revision_is_an_error_not_a_guess() -> None:
    objects = InMemoryObjects(knative_service("podinfo-00001"))
    with pytest.raises(LookupError, match="names no primary revision"):
        asyncio.run(router_for("knative", objects).apply(canary(), RouteState()))
    unborn = copy.deepcopy(knative_service(""))
    with pytest.raises(LookupError, match="has created no revision yet"):
        asyncio.run(KubeWorkloads(InMemoryObjects(unborn)).revision(canary()))


def test_knative_refuses_other_targets_and_other_routers_refuse_knative_targets() -> None:
    deployment: dict[str, Any] = yaml.safe_load(FLAGGER_KNATIVE_CANARY)
    deployment["spec"]["targetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}
    deployment["spec"]["service"] = {"port": 9898}
    router = router_for("knative", InMemoryObjects())
    assert "spec.targetRef: router knative needs a Knative Service" in str(
        spec_problem(Canary.model_validate(deployment), router)
    )
    problem = spec_problem(canary(), router_for("istio", InMemoryObjects()))
    assert problem == "spec.provider: a Knative Service target needs router knative, not istio"


@pytest.mark.parametrize(
    ("routes", "refusal"),
    [
        (RouteState(canary_weight=10, mirror_weight=10), "cannot mirror traffic"),
        (RouteState(canary_weight=10, match=AB_MATCH), "cannot route by header"),
    ],
)
def test_knative_refuses_what_a_traffic_block_cannot_say(routes: RouteState, refusal: str) -> None:
    objects = InMemoryObjects(knative_service("podinfo-00001"))
    with pytest.raises(UnsupportedRoutes, match=refusal):
        asyncio.run(router_for("knative", objects).apply(canary(), routes))
