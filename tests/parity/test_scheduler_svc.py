"""Flagger's scheduler tests for Service targets (``pkg/controller/scheduler_svc_test.go``) on canaryctl.

A Service target has no workloads to wait for, so canaryctl sets each weight as soon as the analysis at
the previous one passed; the weights are compared as the sequence of routes written, not at the end of
each interval (Flagger writes one per interval).
"""

from __future__ import annotations

import pytest

from canaryctl.api.models import Phase
from tests.parity.conftest import NewScheduler
from tests.parity.scheduler import service_canary, target_service

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("analysis", "primary_weights"),
    [
        # Flagger walks 20, 40, 60: stepWeight increments past maxWeight 50. canaryctl's last step lands
        # exactly on maxWeight.
        pytest.param(
            {"stepWeight": 20, "maxWeight": 50}, [100, 80, 60, 50], id="TestScheduler_ServicePromotion"
        ),
        pytest.param(
            {"stepWeight": 50, "maxWeight": 100}, [100, 50, 0], id="TestScheduler_ServicePromotionMaxWeight"
        ),
        pytest.param(
            {"stepWeights": [1, 2, 10, 80]},
            [100, 99, 98, 90, 20],
            id="TestScheduler_ServicePromotionWithWeightsHappyCase",
        ),
    ],
)
async def test_service_promotion(
    fixture: NewScheduler, analysis: dict[str, object], primary_weights: list[int]
) -> None:
    scheduler = await fixture(target_service(), service_canary(**analysis))
    await scheduler.advance()
    assert await scheduler.phase() is Phase.INITIALIZED
    await scheduler.apply(target_service("podinfo-v2"))
    for _ in range(len(primary_weights) + 2):
        await scheduler.advance()
    assert await scheduler.phase() is Phase.SUCCEEDED
    routes = scheduler.route_history()
    assert [r.primary for r in routes] == [*primary_weights, 100]
    assert all(r.primary + r.canary == 100 and not r.mirrored for r in routes)
    assert scheduler.phases()[-4:] == [Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED]
    primary = await scheduler.get("v1", "Service", "podinfo-primary")
    assert primary["spec"]["selector"]["app"] == "podinfo-v2"


async def test_service_promotion_with_weights_overflow(fixture: NewScheduler) -> None:
    """TestScheduler_ServicePromotionWithWeightsOverflow: Flagger caps a stepWeights entry of 200 at 100
    and promotes; canaryctl refuses the Canary (weights are percentages) with InvalidSpec naming the
    field, and touches no traffic."""
    scheduler = await fixture(target_service(), service_canary(stepWeights=[1, 2, 10, 200]))
    await scheduler.operator.reconcile(await scheduler.canary_body())
    status = (await scheduler.canary_body())["status"]
    invalid = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert "spec.analysis.stepWeights.3" in invalid["message"]
    assert "phase" not in status
