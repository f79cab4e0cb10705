"""Turn one metric observation into a verdict: thresholds, no-data policy and canary-vs-primary.

Missing data never passes by accident: a query error holds (or fails under ``onNoData: fail``), and
an empty result follows the metric's ``onNoData`` policy, whose default is to hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canaryctl.api.models import (
    Better,
    CanaryMetric,
    MetricComparison,
    MetricStatus,
    NoDataPolicy,
    Verdict,
)
from canaryctl.engine.types import MetricObservation, MetricSample

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN_METRICS = (SUCCESS_RATE, DURATION)

# One-sided z bounds of the comparison test: fail only when the canary is worse beyond the margin
# with 99% confidence; pass only when it is within the margin with 95% confidence.
FAIL_Z = 2.326
PASS_Z = 1.645


@dataclass(frozen=True)
class Bounds:
    min: float | None
    max: float | None


def bounds(metric: CanaryMetric) -> Bounds:
    """thresholdRange, or Flagger's deprecated ``threshold`` (a minimum for the success rate, a
    maximum for everything else)."""
    if metric.threshold_range is not None:
        return Bounds(metric.threshold_range.min, metric.threshold_range.max)
    if metric.threshold is not None:
        if metric.name == SUCCESS_RATE:
            return Bounds(metric.threshold, None)
        return Bounds(None, metric.threshold)
    return Bounds(None, None)


def better_direction(metric: CanaryMetric, comparison: MetricComparison) -> Better:
    if comparison.better is not None:
        return comparison.better
    if metric.name == SUCCESS_RATE:
        return Better.HIGHER
    if metric.name == DURATION:
        return Better.LOWER
    limits = bounds(metric)
    return Better.HIGHER if limits.min is not None and limits.max is None else Better.LOWER


def _no_data(metric: CanaryMetric, reason: str, error: bool) -> tuple[Verdict, str]:
    """A query error never passes; empty data follows the metric's policy."""
    if metric.on_no_data is NoDataPolicy.FAIL:
        return Verdict.FAIL, reason
    if metric.on_no_data is NoDataPolicy.PASS and not error:
        return Verdict.PASS, f"{reason} (onNoData: pass)"
    return (Verdict.ERROR if error else Verdict.NO_DATA), reason


def _threshold_verdict(name: str, value: float, limits: Bounds) -> tuple[Verdict, str]:
    if limits.min is not None and value < limits.min:
        return Verdict.FAIL, f"{name} {value:.4g} < {limits.min:g}"
    if limits.max is not None and value > limits.max:
        return Verdict.FAIL, f"{name} {value:.4g} > {limits.max:g}"
    return Verdict.PASS, f"{name} {value:.4g} within range"


def _proportion_test(
    canary: MetricSample, primary: MetricSample, max_delta: float
) -> tuple[Verdict, float] | None:
    """Two-proportion test on error rates with Agresti–Caffo smoothing; None without counts.

    ``max_delta`` is in percentage points of success rate. Returns the verdict and the z score of
    "canary error rate exceeds primary's by more than the margin".
    """
    if None in (canary.requests, canary.errors, primary.requests, primary.errors):
        return None
    assert canary.requests is not None and canary.errors is not None
    assert primary.requests is not None and primary.errors is not None
    n_c, n_p = canary.requests + 2, primary.requests + 2
    p_c = (canary.errors + 1) / n_c
    p_p = (primary.errors + 1) / n_p
    spread = math.sqrt(p_c * (1 - p_c) / n_c + p_p * (1 - p_p) / n_p)
    z = (p_c - p_p - max_delta / 100) / spread
    if z > FAIL_Z:
        return Verdict.FAIL, z
    if z < -PASS_Z:
        return Verdict.PASS, z
    return Verdict.INCONCLUSIVE, z


def _compare_verdict(
    metric: CanaryMetric, comparison: MetricComparison, canary: MetricSample, primary: MetricSample
) -> tuple[Verdict, str]:
    assert canary.value is not None and primary.value is not None
    direction = better_direction(metric, comparison)
    label = f"{metric.name} canary {canary.value:.4g} vs primary {primary.value:.4g}"
    if comparison.max_delta is not None:
        tested = _proportion_test(canary, primary, comparison.max_delta)
        if tested is not None:
            verdict, z = tested
            if verdict is Verdict.INCONCLUSIVE:
                return verdict, f"{label}: not enough requests to tell (z={z:.2f})"
            if verdict is Verdict.FAIL:
                return verdict, f"{label}: worse by more than {comparison.max_delta:g} (z={z:.2f})"
        else:
            worse_by = (
                primary.value - canary.value if direction is Better.HIGHER else canary.value - primary.value
            )
            if worse_by > comparison.max_delta:
                return Verdict.FAIL, f"{label}: worse by {worse_by:.4g} > maxDelta {comparison.max_delta:g}"
    if comparison.max_ratio is not None:
        worse, better = (
            (primary.value, canary.value) if direction is Better.HIGHER else (canary.value, primary.value)
        )
        ratio = worse / better if better > 0 else (math.inf if worse > 0 else 1.0)
        if ratio > comparison.max_ratio:
            return Verdict.FAIL, f"{label}: ratio {ratio:.3g} > maxRatio {comparison.max_ratio:g}"
    return Verdict.PASS, f"{label}: within bounds"


def judge(metric: CanaryMetric, observation: MetricObservation | None, now: str) -> MetricStatus:
    limits = bounds(metric)
    base = {
        "name": metric.name,
        "min": limits.min,
        "max": limits.max,
        "time": now,
        "provider": observation.provider if observation else None,
        "query": observation.query if observation else None,
    }
    if observation is None:
        verdict, message = _no_data(metric, f"{metric.name} was not measured", error=True)
        return MetricStatus(verdict=verdict, message=message, **base)
    canary = observation.canary
    primary_value = observation.primary.value if observation.primary else None
    base |= {"value": canary.value, "primary_value": primary_value}
    if observation.error is not None:
        verdict, message = _no_data(metric, f"{metric.name} query failed: {observation.error}", error=True)
        return MetricStatus(verdict=verdict, message=message, **base)
    if canary.value is None or math.isnan(canary.value):
        verdict, message = _no_data(metric, f"no values found for metric {metric.name}", error=False)
        return MetricStatus(verdict=verdict, message=message, **base)
    verdict, message = _threshold_verdict(metric.name, canary.value, limits)
    if verdict is Verdict.PASS and metric.compare is not None:
        primary = observation.primary
        if primary is None or primary.value is None or math.isnan(primary.value):
            verdict, message = _no_data(
                metric, f"no values found for metric {metric.name} on the primary", error=False
            )
        else:
            verdict, message = _compare_verdict(metric, metric.compare, canary, primary)
            if verdict is Verdict.INCONCLUSIVE and metric.on_no_data is NoDataPolicy.FAIL:
                verdict = Verdict.FAIL
    return MetricStatus(verdict=verdict, message=message, **base)
