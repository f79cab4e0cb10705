"""ControllerMetrics: names and labels as Flagger's, isolated registries, a real /metrics server."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.api.models import Canary, CanaryWebhook, WebhookType
from canaryctl.engine.types import HookResult
from canaryctl.telemetry import ControllerMetrics, serve_metrics


def canary(phase: str | None = "Progressing", weight: int = 20, **analysis: Any) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 80},
                "analysis": analysis,
            },
            "status": {"phase": phase, "canaryWeight": weight} if phase else None,
        }
    )


def samples(metrics: ControllerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: ControllerMetrics, series: str, /, **labels: str) -> float | None:
    return samples(metrics).get((series, tuple(sorted(labels.items()))))


def test_status_and_weights_follow_flagger() -> None:
    metrics = ControllerMetrics()
    metrics.record_status(canary("Progressing", 30))
    assert value(metrics, "canaryctl_canary_status", name="podinfo", namespace="test") == 0
    assert value(metrics, "canaryctl_canary_weight", workload="podinfo-primary", namespace="test") == 70
    assert value(metrics, "canaryctl_canary_weight", workload="podinfo", namespace="test") == 30
    metrics.record_status(canary("Succeeded", 0))
    assert value(metrics, "canaryctl_canary_status", name="podinfo", namespace="test") == 1
    metrics.record_status(canary("Failed", 0))
    assert value(metrics, "canaryctl_canary_status", name="podinfo", namespace="test") == 2
    metrics.record_status(canary(None))
    assert value(metrics, "canaryctl_canary_status", name="podinfo", namespace="test") == 0
    for phase in ("Initialized", "WaitingPromotion", "Promoting"):  # Flagger: 1 unless Progressing/Failed
        metrics.record_status(canary(phase, 0))
        assert value(metrics, "canaryctl_canary_status", name="podinfo", namespace="test") == 1


def test_counters_histograms_and_metric_values() -> None:
    metrics = ControllerMetrics()
    ids = {"name": "podinfo", "namespace": "test"}
    metrics.observe_analysis(canary(), 0.2)
    metrics.record_metric(canary(), "request-success-rate", 99.5)
    metrics.record_result(canary(), promoted=True)
    metrics.record_result(canary(iterations=10), promoted=False)
    metrics.record_result(canary(iterations=10, match=[{"headers": {"x": {"exact": "1"}}}]), promoted=False)
    hook = CanaryWebhook(name="load", url="http://127.0.0.1/", type=WebhookType.ROLLOUT)
    metrics.observe_webhook(canary(), hook, HookResult("load", WebhookType.ROLLOUT, False), 0.03)
    metrics.reconcile_error("podinfo", "test")
    metrics.set_total("test", 3)

    assert value(metrics, "canaryctl_canary_duration_seconds_count", **ids) == 1
    assert value(metrics, "canaryctl_canary_duration_seconds_sum", **ids) == 0.2
    assert value(metrics, "canaryctl_canary_metric_analysis", metric="request-success-rate", **ids) == 99.5
    assert value(metrics, "canaryctl_canary_successes_total", deployment_strategy="canary", **ids) == 1
    assert value(metrics, "canaryctl_canary_failures_total", deployment_strategy="blue_green", **ids) == 1
    assert value(metrics, "canaryctl_canary_failures_total", deployment_strategy="ab_testing", **ids) == 1
    webhook = {"webhook": "load", "type": "rollout", "success": "false", **ids}
    assert value(metrics, "canaryctl_webhook_duration_seconds_bucket", le="0.05", **webhook) == 1
    assert value(metrics, "canaryctl_webhook_duration_seconds_bucket", le="0.025", **webhook) == 0
    assert value(metrics, "canaryctl_reconcile_errors_total", **ids) == 1
    assert value(metrics, "canaryctl_canary_total", namespace="test") == 3


def test_registries_are_isolated_and_forget_drops_gauges() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()
    first.record_status(canary())
    first.record_metric(canary(), "latency", 120)
    assert value(second, "canaryctl_canary_status", name="podinfo", namespace="test") is None
    first.forget(canary())
    first.forget(canary())  # forgetting twice is harmless
    names = {name for name, _ in samples(first)}
    assert not names & {
        "canaryctl_canary_status",
        "canaryctl_canary_weight",
        "canaryctl_canary_metric_analysis",
    }


def test_metrics_server_serves_the_registry() -> None:
    metrics = ControllerMetrics()
    metrics.record_status(canary("Failed"))
    server = serve_metrics(metrics, 0, host="127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    finally:
        server.stop()
    assert response.status_code == 200
    assert 'canaryctl_canary_status{name="podinfo",namespace="test"} 2.0' in response.text
