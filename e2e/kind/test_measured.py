"""The kind scenarios' measured-data check, on statuses as the operator writes them (runs without
Docker: it needs no cluster)."""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import CanaryStatus, MetricStatus, Phase, Verdict
from e2e.kind.measured import unmeasured

CANARY: dict[str, Any] = {
    "spec": {
        "analysis": {
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 95}},
                {"name": "request-duration", "thresholdRange": {"max": 500}},
            ]
        }
    }
}


def status(phase: Phase, *metrics: MetricStatus) -> dict[str, Any]:
    """The status as stored on the Canary (camelCase wire form)."""
    wire: dict[str, Any] = CanaryStatus(phase=phase, metrics=list(metrics)).to_wire()
    return wire


def test_a_rollout_decided_on_values_is_measured_whichever_way_it_went() -> None:
    rate = MetricStatus(name="request-success-rate", value=99.5, verdict=Verdict.PASS)
    duration = MetricStatus(name="request-duration", value=42.0, verdict=Verdict.PASS)
    assert unmeasured(CANARY, status(Phase.SUCCEEDED, rate, duration)) == []
    failing = MetricStatus(name="request-success-rate", value=50.0, verdict=Verdict.FAIL)
    assert unmeasured(CANARY, status(Phase.FAILED, failing, duration)) == []


def test_no_data_or_a_missing_metric_is_reported() -> None:
    no_data = MetricStatus(name="request-success-rate", verdict=Verdict.NO_DATA, message="no values found")
    problems = unmeasured(CANARY, status(Phase.FAILED, no_data))
    assert problems == [
        "metric request-success-rate: no measured value (verdict no-data) no values found",
        "metric request-duration: not in status.metrics",
    ]
    assert unmeasured({"spec": {"analysis": {}}}, status(Phase.SUCCEEDED)) == [
        "the Canary's analysis has no metrics: nothing can be measured"
    ]
