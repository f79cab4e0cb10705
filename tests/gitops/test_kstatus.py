"""The Canary status read by kstatus (what Flux health checks use): Current once a revision is rolled
out, InProgress while a rollout runs or waits, Failed once it rolled back or the spec is invalid, and
InProgress for a generation the operator has not observed yet. Every status also keeps Flux's own
condition rules, so Flux's tooling reads it as it reads its own objects."""

from __future__ import annotations

import pytest

from tests.gitops import kstatus
from tests.gitops.rollouts import ROLLOUTS

EXPECTED = {
    "initialized": kstatus.CURRENT,
    "progressing": kstatus.IN_PROGRESS,
    "paused": kstatus.IN_PROGRESS,
    "waiting": kstatus.IN_PROGRESS,
    "waiting-promotion": kstatus.IN_PROGRESS,
    "promoting": kstatus.IN_PROGRESS,
    "succeeded": kstatus.CURRENT,
    "failed": kstatus.FAILED,
    "fast-failed": kstatus.FAILED,
    "invalid": kstatus.FAILED,
    "edited": kstatus.IN_PROGRESS,
}


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_kstatus_reads_each_stage_of_a_rollout(stage: str) -> None:
    obj = ROLLOUTS[stage]()
    status, message = kstatus.compute(obj)
    assert status == EXPECTED[stage], message
    assert kstatus.flux_violations(obj) == []


def test_a_failed_rollout_says_why() -> None:
    status, message = kstatus.compute(ROLLOUTS["fast-failed"]())
    assert status == kstatus.FAILED
    assert message.startswith("fastFail: canary error rate 40.0%")
    status, message = kstatus.compute(ROLLOUTS["invalid"]())
    assert "spec.analysis.stepWeight" in message
