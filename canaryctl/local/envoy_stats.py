"""The Analyzer port read straight from Envoy's /stats/prometheus, for runs without Prometheus.

It keeps timestamped snapshots of the counters and histograms and answers the builtin metrics over
the metric's window from their differences, the way ``rate()`` and ``histogram_quantile`` would.
Custom queries need a real Prometheus (``--prometheus``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.api.models import Canary, CanaryMetric
from canaryctl.engine.judge import DURATION, SUCCESS_RATE
from canaryctl.engine.types import ErrorSample, MetricObservation, MetricSample
from canaryctl.local.router import backend_name
from canaryctl_mesh import telemetry
from canaryctl_mesh.duration import metric_interval_seconds

DEFAULT_WINDOW_SECONDS = 60.0
HISTORY_SECONDS = 900.0

# (metric, backend, response code or bucket bound) -> cumulative value
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Snapshot:
    at: float
    values: dict[Key, float]


@dataclass(frozen=True)
class Side:
    """Which stats describe one backend: upstream (real answers) or caller side (faults included)."""

    counter: str
    buckets: str
    backend_label: str


UPSTREAM = Side(telemetry.UPSTREAM_RQ_TOTAL, telemetry.UPSTREAM_RQ_TIME_BUCKET, telemetry.CLUSTER_LABEL)
CALLER = Side(telemetry.CALLER_RQ_TOTAL, telemetry.CALLER_RQ_DURATION_BUCKET, telemetry.BACKEND_LABEL)
WATCHED = {UPSTREAM.counter, UPSTREAM.buckets, CALLER.counter, CALLER.buckets}


def parse_stats(text: str, at: float) -> Snapshot:
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser reports counters as <name>_total; Envoy names them without the suffix.
            name = family.name if family.type == "counter" else sample.name
            if name not in WATCHED:
                continue
            labels = sample.labels
            backend = labels.get(telemetry.CLUSTER_LABEL) or labels.get(telemetry.BACKEND_LABEL) or ""
            detail = labels.get("le") or labels.get(telemetry.RESPONSE_CODE_LABEL) or ""
            key = (name, backend, detail)
            values[key] = values.get(key, 0.0) + sample.value
    return Snapshot(at, values)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over (upper bound, cumulative count) pairs, linear within a bucket."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def side_counts(values: dict[Key, float], side: Side, backend: str) -> tuple[float, float]:
    """Requests and 5xx answers of one backend in a snapshot (or a difference of two)."""
    requests = errors = 0.0
    for (name, series_backend, code), value in values.items():
        # Envoy's upstream_rq_total parses to the same name; only per-code series are requests.
        if name == side.counter and series_backend == backend and code:
            requests += value
            errors += value if code.startswith("5") else 0.0
    return requests, errors


class EnvoyStatsAnalyzer:
    def __init__(self, stats_url: str) -> None:
        self.stats_url = stats_url
        self.history: deque[Snapshot] = deque()

    async def snapshot(self) -> Snapshot:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(self.stats_url)
            response.raise_for_status()
        taken = parse_stats(response.text, time.monotonic())
        self.history.append(taken)
        while self.history and taken.at - self.history[0].at > HISTORY_SECONDS:
            self.history.popleft()
        return taken

    def _window(self, now: Snapshot, seconds: float) -> dict[Key, float] | None:
        """Increase of every series over the last ``seconds`` (or since the first snapshot)."""
        baseline = None
        for past in self.history:
            if past is now:
                break
            if now.at - past.at >= seconds or baseline is None:
                baseline = past
        if baseline is None:
            return None
        return {key: value - baseline.values.get(key, 0.0) for key, value in now.values.items()}

    async def _delta(self, seconds: float) -> dict[Key, float] | None:
        return self._window(await self.snapshot(), seconds)

    async def measure(self, canary: Canary, metric: CanaryMetric, caller_side: bool) -> MetricObservation:
        if metric.name not in (SUCCESS_RATE, DURATION) or metric.template_ref or metric.query:
            return MetricObservation(
                metric.name,
                MetricSample(None),
                error="custom metrics need Prometheus (--prometheus URL|auto)",
            )
        try:
            delta = await self._delta(
                metric_interval_seconds(metric.interval) if metric.interval else DEFAULT_WINDOW_SECONDS
            )
        except httpx.HTTPError as exc:
            return MetricObservation(metric.name, MetricSample(None), error=f"envoy stats: {exc}")
        side = CALLER if caller_side else UPSTREAM
        backends = [backend_name(canary, primary=False)]
        if metric.compare is not None:
            backends.append(backend_name(canary, primary=True))
        samples = [self._sample(metric.name, delta, side, b) for b in backends]
        return MetricObservation(
            metric.name,
            samples[0],
            samples[1] if len(samples) > 1 else None,
            provider="envoy",
            query=f"{side.counter}{{{side.backend_label}={backends[0]!r}}}",
        )

    def _sample(self, name: str, delta: dict[Key, float] | None, side: Side, backend: str) -> MetricSample:
        if delta is None:
            return MetricSample(None)
        requests, errors = side_counts(delta, side, backend)
        if name == SUCCESS_RATE:
            value = 100.0 * (requests - errors) / requests if requests > 0 else None
            return MetricSample(value, requests=requests, errors=errors)
        buckets = [
            (float(bound), count)
            for (series, series_backend, bound), count in delta.items()
            if series == side.buckets and series_backend == backend
        ]
        return MetricSample(quantile(0.99, buckets) if requests > 0 else None)

    async def error_sample(self, canary: Canary, period_seconds: float) -> ErrorSample | None:
        try:
            delta = await self._delta(period_seconds)
        except httpx.HTTPError:
            return None
        if delta is None:
            return None
        requests, errors = side_counts(delta, UPSTREAM, backend_name(canary, primary=False))
        return ErrorSample(requests=requests, errors=errors)
