"""Report charts a reader can trust: thresholds at scale (99.87 against a minimum of 99 is visible), units
on the axes, a promotion not drawn as a drop to 0%, and a banner that names the verdict and the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from canaryctl.api.models import Canary, CanaryStatus, Phase
from canaryctl.local.recording import new_version_share
from canaryctl.report.history import History, Marker, MarkerKind, Series
from canaryctl.report.html import metric_figure, render_report
from tests.gitops.rollouts import ROLLOUTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def history(stage: str) -> History:
    canary = Canary.model_validate(ROLLOUTS[stage]())
    found = History(canary, source="test")
    found.metrics["request-success-rate"] = Series("request-success-rate", [(at(10), 99.87), (at(20), 99.95)])
    found.verdicts["request-success-rate"] = [Marker(at(10), MarkerKind.PASS, "pass")]
    return found


def test_success_rate_axis_is_zoomed_on_the_threshold_and_the_values() -> None:
    rollout = history("succeeded")
    (metric,) = rollout.canary.spec.effective_analysis.metrics or []
    figure = metric_figure(rollout, metric)
    low, high = figure.layout.yaxis.range
    assert 98 < low < 99 < 99.95 < high < 100.5, (low, high)
    assert figure.layout.yaxis.ticksuffix == "%"
    assert figure.layout.yaxis.title.text == "request-success-rate (%)"
    assert [shape.y0 for shape in figure.layout.shapes if shape.type == "line"] == [99]
    names = [trace.name for trace in figure.data]
    assert names == ["request-success-rate (canary)", "check passed", "check failed"]


@pytest.mark.parametrize(
    ("stage", "headline"),
    [("succeeded", "Promoted: test/podinfo"), ("fast-failed", "Rolled back: test/podinfo")],
)
def test_banner_names_the_verdict_and_the_reason(stage: str, headline: str) -> None:
    page = render_report(history(stage))
    assert f"<h1>{headline}</h1>" in page
    message = (history(stage).canary.status or CanaryStatus()).message
    assert f'<p id="reason">{message}</p>' in page


def test_promotion_keeps_the_new_version_at_full_share() -> None:
    assert new_version_share(CanaryStatus(phase=Phase.PROGRESSING, canary_weight=50)) == 50
    assert new_version_share(CanaryStatus(phase=Phase.FINALISING, canary_weight=0)) == 100
    assert new_version_share(CanaryStatus(phase=Phase.SUCCEEDED, canary_weight=0)) == 100
    assert new_version_share(CanaryStatus(phase=Phase.FAILED, canary_weight=0)) == 0
