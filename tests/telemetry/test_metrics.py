"""ControllerMetrics: Flagger's families label for label (checked against Flagger's documented sample),
canaryctl's extras, isolated registries and a real /metrics server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.api.models import Canary, CanaryStatus, CanaryWebhook, Phase, WebhookType
from canaryctl.engine.types import HookResult
from canaryctl.telemetry import ControllerMetrics, serve_metrics
from canaryctl.telemetry.metrics import Compat

FLAGGER_SAMPLE = Path(__file__).parent / "flagger" / "metrics-sample.txt"
IDS = {"name": "podinfo", "namespace": "test"}  # name: the TARGET's name, as Flagger labels it
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def canary(phase: str | None = "Progressing", weight: int = 20, **analysis: Any) -> Canary:
    """A Canary named unlike its target, so a test can tell which name a label carries."""
    status: dict[str, Any] = {"phase": phase, "canaryWeight": weight} if phase else {}
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo-rollout", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 80},
                "analysis": {"interval": "30s", "threshold": 3, "stepWeight": 10, **analysis},
            },
            "status": status or None,
        }
    )


def samples(metrics: ControllerMetrics) -> Series:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: ControllerMetrics, series: str, /, **labels: str) -> float | None:
    return samples(metrics).get((series, tuple(sorted(labels.items()))))


def flagger_families() -> dict[str, set[str]]:
    """Series name -> label names, from Flagger's documented exposition (its commas are not strict)."""
    found: dict[str, set[str]] = {}
    for line in FLAGGER_SAMPLE.read_text().splitlines():
        match = re.match(r"^(\w+)\{([^}]*)\}", line)
        if match:
            found.setdefault(match[1], set()).update(re.findall(r"(\w+)=", match[2]))
    return found


def test_flagger_compat_has_every_documented_series_with_its_labels() -> None:
    metrics = ControllerMetrics(Compat.FLAGGER, mesh_provider="istio")
    done = canary("Progressing", 30)
    metrics.record_tick(done, canary("Progressing", 40), 0.5)
    metrics.record_metric(done, "podinfo-custom-metric", 0.9)
    metrics.record_result(done, promoted=True)
    metrics.record_result(done, promoted=False)
    metrics.set_total("test", 1)
    ours: dict[str, set[str]] = {}
    for name, pairs in samples(metrics):
        ours.setdefault(name, set()).update(key for key, _ in pairs)
    expected = flagger_families()
    assert len(expected) == 10, "8 families; the histogram shows 3 series names"
    for name, label_names in expected.items():
        assert ours.get(name) == label_names, name
    assert not [name for name in ours if name.startswith("canaryctl_canary_status")]
    own = ControllerMetrics()
    own.record_status(done)
    assert value(own, "canaryctl_canary_status", **IDS) == 0
    assert value(own, "flagger_canary_status", **IDS) is None


@pytest.mark.parametrize(
    ("phase", "expected"),
    [(None, 1), *[(p.value, {Phase.PROGRESSING: 0, Phase.FAILED: 2}.get(p, 1)) for p in Phase]],
)
def test_status_values_are_flaggers(phase: str | None, expected: int) -> None:
    """Flagger's SetStatus: 0 Progressing, 2 Failed, 1 for anything else (no phase yet included)."""
    metrics = ControllerMetrics()
    metrics.record_status(canary(phase))
    assert value(metrics, "canaryctl_canary_status", **IDS) == expected


def test_weights_strategies_and_analysis_status() -> None:
    metrics = ControllerMetrics(Compat.FLAGGER)
    metrics.record_status(canary("Progressing", 30))
    assert value(metrics, "flagger_canary_weight", workload="podinfo-primary", namespace="test") == 70
    assert value(metrics, "flagger_canary_weight", workload="podinfo", namespace="test") == 30
    metrics.record_result(canary(), promoted=True)
    metrics.record_result(canary(iterations=10), promoted=False)
    metrics.record_result(canary(iterations=10, match=[{"headers": {"x": {"exact": "1"}}}]), promoted=False)
    skipped = canary().model_copy(update={"spec": canary().spec.model_copy(update={"skip_analysis": True})})
    metrics.record_result(skipped, promoted=True)
    result = "flagger_canary_successes_total"
    assert value(metrics, result, deployment_strategy="canary", analysis_status="completed", **IDS) == 1
    assert value(metrics, result, deployment_strategy="canary", analysis_status="skipped", **IDS) == 1
    failed = "flagger_canary_failures_total"
    assert value(metrics, failed, deployment_strategy="blue-green", analysis_status="completed", **IDS) == 1
    assert value(metrics, failed, deployment_strategy="ab-testing", analysis_status="completed", **IDS) == 1


def test_info_and_total() -> None:
    metrics = ControllerMetrics(Compat.FLAGGER, mesh_provider="istio", version="1.2.3")
    assert value(metrics, "flagger_info", version="1.2.3", mesh_provider="istio") == 1
    metrics.set_total("test", 3)
    assert value(metrics, "flagger_canary_total", namespace="test") == 3


def test_a_tick_records_duration_only_while_analysing_and_a_result_once() -> None:
    metrics = ControllerMetrics()
    metrics.record_tick(canary("Initialized", 0), canary("Progressing", 0), 0.1)  # detection: no analysis
    metrics.record_tick(canary("Progressing", 10), canary("Progressing", 20), 0.2)
    metrics.record_tick(canary("Progressing", 20), canary("Promoting", 20), 0.3)
    metrics.record_tick(canary("Promoting", 20), canary("Finalising", 0), 0.4)
    metrics.record_tick(canary("Finalising", 0), canary("Succeeded", 0), 0.5)
    metrics.record_tick(canary("Succeeded", 0), canary("Succeeded", 0), 0.6)  # idle: no second result
    assert value(metrics, "canaryctl_canary_duration_seconds_count", **IDS) == 2
    assert value(metrics, "canaryctl_canary_duration_seconds_sum", **IDS) == pytest.approx(0.5)
    assert value(metrics, "canaryctl_canary_duration_seconds_bucket", le="0.25", **IDS) == 1  # Go buckets
    labels = {"deployment_strategy": "canary", "analysis_status": "completed", **IDS}
    assert value(metrics, "canaryctl_canary_successes_total", **labels) == 1
    metrics.record_tick(canary("Progressing", 20), canary("Failed", 0), 0.7)  # a rollback is no analysis
    assert value(metrics, "canaryctl_canary_duration_seconds_count", **IDS) == 2
    assert value(metrics, "canaryctl_canary_failures_total", **labels) == 1


def test_builtin_request_duration_is_in_seconds_as_flaggers() -> None:
    metrics = [
        {"name": "request-duration", "thresholdRange": {"max": 500}},
        {"name": "latency", "templateRef": {"name": "latency"}, "thresholdRange": {"max": 500}},
    ]
    judged = [
        {"name": "request-duration", "value": 250.0, "max": 500, "verdict": "pass"},
        {"name": "latency", "value": 250.0, "max": 500, "verdict": "pass"},
    ]
    before = canary(metrics=metrics)
    status = CanaryStatus.model_validate({"phase": "Progressing", "canaryWeight": 20, "metrics": judged})
    after = before.model_copy(update={"status": status})
    flagger, own = ControllerMetrics(Compat.FLAGGER), ControllerMetrics()
    for recorder in (flagger, own):
        recorder.record_tick(before, after, 0.1)
    analysis = "flagger_canary_metric_analysis"
    assert value(flagger, analysis, metric="request-duration", **IDS) == 0.25
    assert value(flagger, analysis, metric="latency", **IDS) == 250  # a template's value is as queried
    threshold = "canaryctl_canary_metric_threshold"
    assert value(flagger, threshold, metric="request-duration", bound="max", **IDS) == 0.5
    assert value(own, "canaryctl_canary_metric_analysis", metric="request-duration", **IDS) == 250
    assert value(own, threshold, metric="request-duration", bound="max", **IDS) == 500


def test_extras_follow_the_status() -> None:
    now = [1000.0]
    metrics = ControllerMetrics(clock=lambda: now[0])
    progressing = canary("Progressing", 20)
    assert progressing.status is not None
    progressing.status.current_step = 3
    progressing.status.failed_checks = 1
    progressing.status.mirror_weight = 5
    metrics.record_status(progressing)
    assert value(metrics, "canaryctl_canary_phase", phase="Progressing", **IDS) == 1
    assert value(metrics, "canaryctl_canary_phase", phase="Failed", **IDS) is None
    assert value(metrics, "canaryctl_canary_steps", **IDS) == 20  # setWeight + analysis per 10 % step
    assert value(metrics, "canaryctl_canary_steps_completed", **IDS) == 3
    assert value(metrics, "canaryctl_canary_failed_checks", **IDS) == 1
    assert value(metrics, "canaryctl_canary_failed_checks_threshold", **IDS) == 3
    assert value(metrics, "canaryctl_canary_mirror_weight", **IDS) == 5
    assert value(metrics, "canaryctl_canary_analysis_interval_seconds", **IDS) == 30
    info = {"canary": "podinfo-rollout", "provider": "", "strategy": "canary", **IDS}
    assert value(metrics, "canaryctl_canary_info", **info) == 1
    progress = "canaryctl_canary_last_progress_timestamp_seconds"
    assert value(metrics, progress, **IDS) == 1000
    now[0] = 1090.0
    metrics.record_status(progressing)  # the same position: no progress since
    assert value(metrics, progress, **IDS) == 1000
    progressing.status.iterations = 1
    metrics.record_status(progressing)  # a check passed
    assert value(metrics, progress, **IDS) == 1090
    now[0] = 1500.0
    metrics.record_status(canary("Succeeded", 0))  # at rest nothing is due: never lagging
    assert value(metrics, progress, **IDS) == 1500
    # One phase series per Canary: the previous phase's goes, so `== 1` and `by (phase)` count it once.
    phases = {labels: v for (name, labels), v in samples(metrics).items() if name == "canaryctl_canary_phase"}
    assert phases == {tuple(sorted({"phase": "Succeeded", **IDS}.items())): 1}


def test_webhooks_and_reconcile_errors() -> None:
    metrics = ControllerMetrics()
    hook = CanaryWebhook(name="load", url="http://127.0.0.1/", type=WebhookType.ROLLOUT)
    metrics.observe_webhook(canary(), hook, HookResult("load", WebhookType.ROLLOUT, False), 0.03)
    metrics.reconcile_error("podinfo", "test")
    webhook = {"webhook": "load", "type": "rollout", "success": "false", **IDS}
    assert value(metrics, "canaryctl_webhook_duration_seconds_bucket", le="0.05", **webhook) == 1
    assert value(metrics, "canaryctl_webhook_duration_seconds_bucket", le="0.025", **webhook) == 0
    assert value(metrics, "canaryctl_reconcile_errors_total", **IDS) == 1


def test_registries_are_isolated_and_forget_drops_every_gauge() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()
    before = canary(metrics=[{"name": "latency", "templateRef": {"name": "l"}, "thresholdRange": {"max": 1}}])
    after = before.model_copy(deep=True)
    assert after.status is not None
    after.status.metrics = CanaryStatus.model_validate(
        {"metrics": [{"name": "latency", "value": 0.5, "max": 1, "verdict": "pass"}]}
    ).metrics
    first.record_tick(before, after, 0.1)
    assert value(second, "canaryctl_canary_status", **IDS) is None
    first.forget(after)
    first.forget(after)  # forgetting twice is harmless
    left = {name for name, labels in samples(first) if ("name", "podinfo") in labels}
    histogram = "canaryctl_canary_duration_seconds"
    assert left == {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}  # as Flagger keeps it


def test_metrics_server_serves_the_registry() -> None:
    metrics = ControllerMetrics(Compat.FLAGGER)
    metrics.record_status(canary("Failed"))
    server = serve_metrics(metrics, 0, host="127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    finally:
        server.stop()
    assert response.status_code == 200
    assert 'flagger_canary_status{name="podinfo",namespace="test"} 2.0' in response.text
