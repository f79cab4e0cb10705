"""1,000 generated documents applied to a cluster one operator watches.

The same generated documents as the lint suite (``tests.reliability.documents``), each given its own
name, applied to kmock's emulator, which (unlike an API server with the CRD schemas) stores whatever
it gets, so the operator sees every malformed spec. What must hold: every Canary the models reject
gets an ``InvalidSpec`` condition whose message names the field; every Canary they accept is
initialized (its target exists) or, when it asks for routing its router cannot express, gets an
``InvalidSpec`` naming the router; and no tick fails, whatever the MetricTemplates and AlertProviders
around it look like.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator

import kmock
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings

from canaryctl.api import models
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet, running_kubelet
from tests.kube.emulator import StampingEmulator, kube_api, objects, running_emulator  # noqa: F401
from tests.operator.conftest import prometheus  # noqa: F401
from tests.operator.helpers import NS, Obj, events, workload
from tests.reliability.documents import documents, model_rejects
from tests.reliability.operators import OperatorProcesses, operators  # noqa: F401

pytestmark = pytest.mark.asyncio

DOCUMENTS = 1000
SETTLE_TIMEOUT_SECONDS = 180.0
FIELD_PATH = re.compile(r"(^|; )[A-Za-z][\w.\[\]-]*: ")  # "spec.analysis.stepWeight: ..."


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    """Without kmock's request log, which it matches every request against: quadratic at 1,000 objects."""
    async with running_emulator(keep_requests=False) as running:
        yield running


@pytest_asyncio.fixture()
async def kubelet(emulator: StampingEmulator) -> AsyncIterator[Kubelet]:
    """Marks workloads available every half second: scanning 2,000 objects every 50 ms costs more."""
    async with running_kubelet(emulator) as running:
        running.period = 0.5
        yield running


def generated(count: int) -> list[Obj]:
    """``count`` documents from the strategy, the same ones on every run."""
    drawn: list[Obj] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(documents)
    def collect(doc: Obj) -> None:
        drawn.append(doc)

    collect()
    return drawn


def target_of(canary: models.Canary, index: int) -> Obj:
    """The workload or Service a valid Canary points at, named for this document."""
    ref = canary.spec.target_ref
    name = f"target-{index}"
    if ref.kind == "Service":
        ports = [{"name": "http", "port": 80, "targetPort": 8080}]
        spec = {"selector": {"app": name}, "ports": ports}
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    return workload(ref.kind, name)


def failed_ticks(emulator: kmock.KubernetesEmulator) -> list[str]:
    """Events the operator posts when a tick raised: there must be none."""
    return [
        f"{event['involvedObject']['name']}: {event['message']}"
        for event in events(emulator)
        if event.get("reason") in ("ActionFailed", "ReconcileError")
    ]


def invalid_spec(status: Obj) -> str | None:
    found = [c for c in status.get("conditions") or [] if c.get("type") == "InvalidSpec"]
    return str(found[0].get("message")) if found and found[0].get("status") == "True" else None


async def test_generated_documents_through_the_operator(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,
    emulator: kmock.KubernetesEmulator,
    operators: OperatorProcesses,  # noqa: F811
) -> None:
    docs = generated(DOCUMENTS)
    assert len(docs) == DOCUMENTS
    expect: dict[str, str] = {}  # Canary name -> "invalid" | "valid"
    applied: Counter[str] = Counter()
    for index, doc in enumerate(docs):
        if doc.get("apiVersion") != models.API_VERSION or str(doc.get("kind")) not in models.KINDS:
            continue  # an API server would not take an unknown kind
        name = f"doc-{index}"
        doc["metadata"] = {"name": name, "namespace": NS}  # metadata is the API server's to check
        rejected = model_rejects(doc)
        if doc["kind"] == "Canary":
            expect[name] = "invalid" if rejected else "valid"
            if not rejected:
                doc["spec"]["targetRef"]["name"] = f"target-{index}"
                await objects.apply(target_of(models.Canary.model_validate(doc), index))
        await objects.apply(doc)
        applied[doc["kind"]] += 1
    process = await operators.start()

    outcomes: dict[str, str] = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline and len(outcomes) < len(expect):
        for name in set(expect) - set(outcomes):
            stored = emulator.objects[f"{models.API_VERSION}/canaries", NS, name]  # no API round trip
            status = stored.raw.get("status") or {}
            message = invalid_spec(status)
            if message is not None:
                outcomes[name] = message
            elif status.get("phase") == "Initialized":
                outcomes[name] = "Initialized"
        await asyncio.sleep(0.5)
    missing = sorted(set(expect) - set(outcomes))
    assert not missing, f"{len(missing)} Canaries never settled, e.g. {missing[:5]}"

    for name, expected in expect.items():
        outcome = outcomes[name]
        if expected == "invalid":
            assert FIELD_PATH.search(outcome), f"{name}: no field path in {outcome!r}"
        else:
            assert outcome == "Initialized" or "router" in outcome, f"{name}: {outcome}"
    failures = failed_ticks(emulator)
    assert not failures, failures[:5]
    assert process.returncode is None, "the operator exited"
    valid = sum(1 for outcome in outcomes.values() if outcome == "Initialized")
    print(f"documents {dict(applied)}; Canaries: {valid} initialized, {len(expect) - valid} InvalidSpec")
    assert valid > 0 and valid < len(expect)
