"""kstatus through the real operator: observedGeneration follows every edit, also one that is rejected
with the same message as the last, and a fixed spec clears Stalled."""

from __future__ import annotations

import pytest

from canaryctl_mesh.kube import KubeObjects
from tests.gitops import kstatus
from tests.kube.cluster import Kubelet
from tests.operator.conftest import StartOperator
from tests.operator.helpers import Obj, canary, get_canary, setup_target, wait_for, wait_phase

pytestmark = pytest.mark.asyncio


async def _settled(objects: KubeObjects, name: str, expected: str) -> Obj:
    """The Canary once kstatus reads ``expected`` for its current generation."""
    found: Obj = {}

    async def reached() -> bool:
        nonlocal found
        found = await get_canary(objects, name)
        status = found.get("status") or {}
        current = status.get("observedGeneration") == found["metadata"]["generation"]
        return current and kstatus.compute(found)[0] == expected

    await wait_for(reached, what=f"kstatus {expected} for {name}")
    return found


async def test_observed_generation_and_stalled_follow_each_edit(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    await setup_target(objects, "Deployment", "web")
    await objects.apply(canary("web"))
    await start_operator()
    await wait_phase(objects, "web", "Initialized")
    first = await _settled(objects, "web", kstatus.CURRENT)

    await objects.apply(canary("web", stepWeight=500))
    broken = await _settled(objects, "web", kstatus.FAILED)
    assert broken["metadata"]["generation"] > first["metadata"]["generation"]
    assert "spec.analysis.stepWeight" in kstatus.compute(broken)[1]
    assert kstatus.flux_violations(broken) == []

    # Another edit the operator rejects with the very same message: a new generation, observed too.
    await objects.apply(canary("web", stepWeight=600))
    again = await _settled(objects, "web", kstatus.FAILED)
    assert again["metadata"]["generation"] > broken["metadata"]["generation"]

    await objects.apply(canary("web", stepWeight=20))
    fixed = await _settled(objects, "web", kstatus.CURRENT)
    types = {c["type"] for c in fixed["status"]["conditions"]}
    assert types == {"Promoted", "Ready"}, "InvalidSpec and Stalled are gone once the spec is valid"
