"""Flagger's metric tests of the scheduler (``pkg/controller/scheduler_metrics_test.go``), against canaryctl.

Provider availability and metric checks go through canaryctl's metrics analyzer (the same one the
operator ticks with) against the loopback Prometheus of the fixture, judged by the engine's ``judge``;
the controller's own Prometheus metrics are read from the operator's registry after real ticks.
"""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl.api.models import Canary, CanaryMetric, Phase, Verdict
from canaryctl.engine.clock import to_rfc3339
from canaryctl.engine.judge import judge
from canaryctl.local.prometheus import free_port
from tests.parity.conftest import NewScheduler
from tests.parity.scheduler import FAILING_METRIC, HPA, METRICS, START, Scheduler, canary, workload

pytestmark = pytest.mark.asyncio


def with_metrics(*metrics: dict[str, Any], **spec: Any) -> Canary:
    manifest = canary()
    manifest["spec"]["analysis"]["metrics"] = list(metrics)
    manifest["spec"] |= spec
    return Canary.model_validate(manifest)


async def deployment(fixture: NewScheduler) -> Scheduler:
    return await fixture(workload("Deployment"), HPA, canary())


def closed_address() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_provider_availability_builtin(fixture: NewScheduler) -> None:
    """TestController_checkMetricProviderAvailability/builtin. Flagger runs this check when a Canary is
    initialized and records an event; canaryctl's operator does not (the local runtime does)."""
    scheduler = await deployment(fixture)
    analyzer = scheduler.operator.analyzer
    metric = {"name": "request-success-rate"}
    assert await analyzer.availability(with_metrics(metric)) == []
    unreachable = with_metrics(metric, metricsServer=closed_address())
    assert await analyzer.availability(unreachable) != []
    prometheus = scheduler.operator.config.prometheus_url
    assert await analyzer.availability(with_metrics(metric, metricsServer=prometheus)) == []


async def test_provider_availability_template_ref(fixture: NewScheduler) -> None:
    """TestController_checkMetricProviderAvailability/templateRef."""
    analyzer = (await deployment(fixture)).operator.analyzer
    missing = {"name": "custom", "templateRef": {"name": "non-exist", "namespace": "default"}}
    problems = await analyzer.availability(with_metrics(missing))
    assert len(problems) == 1 and "non-exist" in problems[0]
    found = {"name": "custom", "templateRef": {"name": "envoy", "namespace": "default"}}
    assert await analyzer.availability(with_metrics(found)) == []


async def test_provider_availability_intra_namespace_template_ref(fixture: NewScheduler) -> None:
    """TestController_checkMetricProviderAvailability/intraNamespaceTemplateRef."""
    analyzer = (await deployment(fixture)).operator.analyzer
    assert (
        await analyzer.availability(with_metrics({"name": "custom", "templateRef": {"name": "envoy"}})) == []
    )


TEMPLATE_RANGE = {"thresholdRange": {"min": 0, "max": 100}}
QUERY = '>- sum(logback_events_total{level="error", job="some-app"}) <= bool 0'


@pytest.mark.parametrize(
    ("metric", "passes"),
    [
        pytest.param(
            {
                "name": "custom-vars",
                "templateVariables": {"first": "abc", "second": "def"},
                "templateRef": {"name": "custom-vars", "namespace": "default"},
                **TEMPLATE_RANGE,
            },
            True,
            id="TestController_runMetricChecks/customVariables",
        ),
        pytest.param(
            {"name": "undefined metric", **TEMPLATE_RANGE},
            False,
            id="TestController_runMetricChecks/undefined",
        ),
        pytest.param(
            {"name": "request-success-rate", **TEMPLATE_RANGE},
            True,
            id="TestController_runMetricChecks/builtinMetric",
        ),
        pytest.param(
            {"name": "undefined metric", **TEMPLATE_RANGE, "query": QUERY},
            True,
            id="TestController_runMetricChecks/query-without-template",
        ),
        pytest.param(
            {
                "name": "custom-vars",
                "templateVariables": {"first": "abc", "second": "def"},
                "templateRef": {"name": "custom-vars", "namespace": "default"},
                **TEMPLATE_RANGE,
                "query": QUERY,
            },
            True,
            id="TestController_runMetricChecks/template-and-query",
        ),
    ],
)
async def test_run_metric_checks(fixture: NewScheduler, metric: dict[str, Any], passes: bool) -> None:
    scheduler = await deployment(fixture)
    subject = with_metrics(metric)
    parsed = CanaryMetric.model_validate(metric)
    observation = await scheduler.operator.analyzer.measure(subject, parsed, caller_side=False)
    verdict = judge(parsed, observation, to_rfc3339(START)).verdict
    assert (verdict is Verdict.PASS) is passes, observation


def sample(scheduler: Scheduler, series: str, **labels: str) -> float | None:
    value = scheduler.operator.metrics.registry.get_sample_value(series, labels)
    return None if value is None else float(value)


async def initialized(fixture: NewScheduler, **spec: Any) -> Scheduler:
    manifest = canary()
    manifest["spec"] |= spec
    scheduler = await fixture(workload("Deployment"), HPA, manifest)
    await scheduler.advance()
    scheduler.make_primary_ready()
    await scheduler.advance()
    return scheduler


async def progressing(scheduler: Scheduler) -> None:
    await scheduler.apply(workload("Deployment", "1.2.1"))
    await scheduler.advance()
    scheduler.make_canary_ready()
    await scheduler.advance()


IDS = {"name": "podinfo", "namespace": "default"}
STRATEGY = {**IDS, "deployment_strategy": "canary", "analysis_status": "completed"}


async def test_metrics_state_transition_successful_promotion(fixture: NewScheduler) -> None:
    """TestController_MetricsStateTransition/successful canary promotion with count metrics."""
    scheduler = await initialized(fixture)
    assert sample(scheduler, "canaryctl_canary_status", **IDS) == 1
    await progressing(scheduler)
    assert sample(scheduler, "canaryctl_canary_status", **IDS) == 0
    primary = sample(scheduler, "canaryctl_canary_weight", workload="podinfo-primary", namespace="default")
    canary_weight = sample(scheduler, "canaryctl_canary_weight", workload="podinfo", namespace="default")
    assert primary is not None and canary_weight is not None
    assert 50 <= primary <= 100 and 10 <= canary_weight <= 50 and primary + canary_weight == 100
    for _ in range(10):
        await scheduler.advance()
        if await scheduler.phase() is Phase.SUCCEEDED:
            break
    assert sample(scheduler, "canaryctl_canary_successes_total", **STRATEGY) == 1


async def test_metrics_state_transition_failed_rollback(fixture: NewScheduler) -> None:
    """TestController_MetricsStateTransition/failed canary rollback with count metrics. As in the workload
    tests, the failed checks are set on a real rollout (canaryctl does not analyse a zero-replica canary)."""
    scheduler = await initialized(fixture)
    await progressing(scheduler)
    await scheduler.sync_status(phase="Progressing", failedChecks=10)
    await scheduler.edit_analysis(metrics=[*METRICS, FAILING_METRIC])
    await scheduler.advance()
    await scheduler.advance()
    assert sample(scheduler, "canaryctl_canary_status", **IDS) == 2
    assert (
        sample(scheduler, "canaryctl_canary_weight", workload="podinfo-primary", namespace="default") == 100
    )
    assert sample(scheduler, "canaryctl_canary_weight", workload="podinfo", namespace="default") == 0
    assert sample(scheduler, "canaryctl_canary_failures_total", **STRATEGY) == 1


async def test_metrics_state_transition_skipped_analysis(fixture: NewScheduler) -> None:
    """TestController_MetricsStateTransition/skipped analysis with count metrics: a success labelled
    ``analysis_status="skipped"``."""
    scheduler = await initialized(fixture, skipAnalysis=True)
    await progressing(scheduler)
    assert await scheduler.phase() is Phase.SUCCEEDED
    assert (
        sample(scheduler, "canaryctl_canary_successes_total", **STRATEGY | {"analysis_status": "skipped"})
        == 1
    )


async def test_analysis_metrics_recording(fixture: NewScheduler) -> None:
    """TestController_AnalysisMetricsRecording: each checked metric's value is exported."""
    scheduler = await initialized(fixture)
    await progressing(scheduler)
    await scheduler.advance()
    for name in ("request-success-rate", "request-duration"):
        assert sample(scheduler, "canaryctl_canary_metric_analysis", **IDS, metric=name) == 100
