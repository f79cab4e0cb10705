"""With --metrics-compat flagger, Flagger's alert and its documented series answer about canaryctl's
rollouts as they would about Flagger's: a real Prometheus scrapes a running operator (over the emulated
API) through a promoted canary rollout and a rolled-back blue/green one.

The expected answers follow Flagger's recorder calls in pkg/controller/scheduler.go: ``name`` is the
target's name, a promotion ends with weights 100/0 (runPromotionTrafficShift, SetWeight(total, 0)) and
status 1, a rollback with weights 100/0 and status 2; successes and failures count once per rollout with
the strategy ``canary`` or ``blue-green`` and ``analysis_status="completed"``; the duration histogram
counts analysis ticks. Flagger's alert example (docs/gitbook/usage/alerting.md) is loaded verbatim as a
rule and must be pending for the failed canary only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from canaryctl.api.models import CanaryAnalysis
from canaryctl.telemetry.metrics import Compat, ControllerMetrics
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import running_kubelet, running_prometheus
from tests.operator.helpers import NS, canary, setup_target, wait_phase, workload
from tests.telemetry.controller import Prometheus, prometheus_scraping, running_controller

# Flagger's Prometheus Alert Manager example, verbatim (docs/gitbook/usage/alerting.md, fluxcd/flagger
# commit 15bd6ad5, Apache-2.0).
FLAGGER_ALERT = """
  - alert: canary_rollback
    expr: flagger_canary_status > 1
    for: 1m
    labels:
      severity: warning
    annotations:
      summary: "Canary failed"
      description: "Workload {{ $labels.name }} namespace {{ $labels.namespace }}"
"""


def rollout(canary_name: str, target: str, **analysis: Any) -> dict[str, Any]:
    manifest = canary(target, interval="300ms", **analysis)
    manifest["metadata"]["name"] = canary_name  # unlike the target's, so the name label can be told apart
    return manifest


async def bump(objects: KubeObjects, name: str) -> None:
    await objects.apply(workload("Deployment", name, image="app:v2", config=f"{name}-config"))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_flaggers_alert_and_series_answer_as_for_flagger(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CanaryAnalysis, "min_interval_seconds", 0.3)
    rules = tmp_path / "flagger.rules.yaml"
    group = {"name": "flagger", "rules": yaml.safe_load(FLAGGER_ALERT)}
    rules.write_text(yaml.safe_dump({"groups": [group]}))
    async with running_kubelet(emulator), running_prometheus() as provider:
        provider.values["success_api"] = 50.0  # api's canary fails its checks; web's passes (100)
        metrics = ControllerMetrics(Compat.FLAGGER, mesh_provider="canaryctl")
        async with running_controller(emulator, metrics, prometheus_url=provider.url) as controller:
            for target in ("web", "api"):
                await setup_target(objects, "Deployment", target)
            await objects.apply(rollout("web-rollout", "web", stepWeight=50))
            await objects.apply(rollout("api-rollout", "api", iterations=3, threshold=2))
            for name in ("web-rollout", "api-rollout"):
                await wait_phase(objects, name, "Initialized", timeout=60)
            for target in ("web", "api"):
                await bump(objects, target)
            await wait_phase(objects, "web-rollout", "Succeeded", timeout=90)
            await wait_phase(objects, "api-rollout", "Failed", timeout=90)
            with prometheus_scraping({"canaryctl": controller.metrics_url}, [rules]) as prometheus:
                alert = 'ALERTS{alertname="canary_rollback"}'
                assert await asyncio.to_thread(prometheus.until, alert), "alert not pending"
                check_answers(prometheus)


def check_answers(prometheus: Prometheus) -> None:
    (alert,) = prometheus.query('ALERTS{alertname="canary_rollback"}')
    assert alert["metric"] | {"alertstate": "pending", "name": "api", "namespace": NS} == alert["metric"]
    (group,) = prometheus.api("rules")["groups"]
    assert [rule["health"] for rule in group["rules"]] == ["ok"]

    assert prometheus.values("flagger_canary_status", "name", "namespace") == {("web", NS): 1, ("api", NS): 2}
    assert prometheus.values("flagger_canary_weight", "workload") == {
        ("web-primary",): 100,
        ("web",): 0,
        ("api-primary",): 100,
        ("api",): 0,
    }
    result = ("name", "deployment_strategy", "analysis_status")
    successes = prometheus.values("flagger_canary_successes_total", *result)
    assert successes == {("web", "canary", "completed"): 1}
    failures = prometheus.values("flagger_canary_failures_total", *result)
    assert failures == {("api", "blue-green", "completed"): 1}
    assert prometheus.values("flagger_canary_total", "namespace") == {(NS,): 2}
    assert prometheus.values("flagger_info", "mesh_provider") == {("canaryctl",): 1}
    assert prometheus.values("flagger_canary_metric_analysis", "name", "metric") == {
        ("web", "success"): 100,
        ("api", "success"): 50,
    }
    # web: one check per 50 % step; api: its two failing checks. Rollbacks and promotions are not analysis.
    counts = prometheus.values("flagger_canary_duration_seconds_count", "name")
    assert counts[("web",)] >= 2 and counts[("api",)] >= 2, counts
    assert not prometheus.query('{__name__=~"canaryctl_canary_(status|weight|total)|flagger_.*_created"}')
