"""The controller's Prometheus metrics: Flagger's recorder, label for label, plus canaryctl's own.

Flagger's eight families (``pkg/metrics/recorder.go``) keep Flagger's labels and values in both naming
schemes: ``name`` is the target's name (not the Canary's), the status gauge is 0 while Progressing,
2 when Failed and 1 otherwise, the strategy label reads ``canary``, ``blue-green`` or ``ab-testing``,
and successes and failures carry ``analysis_status``. With ``compat="flagger"`` they are named
``flagger_*``, so Flagger's alerts and queries work unchanged; otherwise ``canaryctl_*``, so a Flagger
query ports by renaming the prefix. canaryctl's extras (phase, steps, thresholds, webhook latency,
reconcile errors) are always ``canaryctl_*`` and keyed by the same ``name`` and ``namespace``.

Each ``ControllerMetrics`` owns its registry, so two controllers (or two tests) in one process never share
series.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from canaryctl import __version__
from canaryctl.api.models import INCLUDED_MESH, Canary, CanaryWebhook, Phase
from canaryctl.engine.steps import StepKind, compile_steps
from canaryctl.engine.types import HookResult


class Compat(StrEnum):
    """Which names Flagger's families are exposed under."""

    CANARYCTL = "canaryctl"
    FLAGGER = "flagger"


# Flagger's SetStatus: 0 Progressing, 2 Failed, 1 for every other phase (none set yet included).
STATUS_PROGRESSING, STATUS_OTHER, STATUS_FAILED = 0, 1, 2
# Flagger's strategy and analysis_status label values (pkg/metrics/recorder.go).
CANARY, BLUE_GREEN, AB_TESTING = "canary", "blue-green", "ab-testing"
COMPLETED, SKIPPED = "completed", "skipped"
# Go client's prometheus.DefBuckets, which Flagger's duration histogram uses (prometheus-client's differ).
GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Flagger records its builtin request-duration in seconds; canaryctl's status keeps milliseconds.
BUILTIN_DURATION = "request-duration"
ANALYSIS_PHASES = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
RESULT_PHASES = (Phase.SUCCEEDED, Phase.FAILED)
# Phases in which the rollout is meant to move: no advance for long there means it is stuck.
MOVING_PHASES = (Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING)


def target_name(canary: Canary) -> str:
    return canary.spec.target_ref.name


def _ids(canary: Canary) -> tuple[str, str]:
    """Flagger's (name, namespace): the target's name, so series follow the workload."""
    return target_name(canary), canary.metadata.namespace or ""


def deployment_strategy(canary: Canary) -> str:
    """Flagger's Canary.DeploymentStrategy(): A/B with match+iterations, blue/green with iterations."""
    analysis = canary.spec.effective_analysis
    if analysis.iterations and analysis.match:
        return AB_TESTING
    if analysis.iterations:
        return BLUE_GREEN
    return CANARY


def status_value(phase: Phase | None) -> int:
    if phase is Phase.PROGRESSING:
        return STATUS_PROGRESSING
    if phase is Phase.FAILED:
        return STATUS_FAILED
    return STATUS_OTHER


def _is_builtin_duration(canary: Canary, metric: str) -> bool:
    """Flagger's builtin request-duration: by name, with neither a template nor an inline query."""
    return metric == BUILTIN_DURATION and any(
        m.name == metric and m.template_ref is None and not m.query
        for m in canary.spec.effective_analysis.metrics or []
    )


@dataclass
class _Progress:
    """Where a rollout stood at its last move, and when it moved there."""

    position: tuple[object, ...]
    since: float


class ControllerMetrics:
    """Records what the controller observes; ``exposition()`` renders it for a /metrics endpoint."""

    def __init__(
        self,
        compat: Compat | str = Compat.CANARYCTL,
        mesh_provider: str = INCLUDED_MESH,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.compat = Compat(compat)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series, as Flagger
        self.registry = CollectorRegistry()
        self._clock = clock
        prefix = self.compat.value
        canary = ["name", "namespace"]
        result = [*canary, "deployment_strategy", "analysis_status"]

        def gauge(name: str, doc: str, labels: list[str], own: bool = False) -> Gauge:
            return Gauge(f"{'canaryctl' if own else prefix}_{name}", doc, labels, registry=self.registry)

        # --- Flagger's families -----------------------------------------------------------------------
        self.info = gauge("info", "Controller version and mesh provider", ["version", "mesh_provider"])
        self.info.labels(version, mesh_provider).set(1)
        self.total = gauge("canary_total", "Total number of canary objects", ["namespace"])
        self.status = gauge("canary_status", "Last canary analysis result", canary)
        self.weight = gauge(
            "canary_weight", "The virtual service destination weight current value", ["workload", "namespace"]
        )
        self.duration = Histogram(
            f"{prefix}_canary_duration_seconds",
            "Seconds spent performing canary analysis.",
            canary,
            buckets=GO_DEFAULT_BUCKETS,
            registry=self.registry,
        )
        self.metric_value = gauge(
            "canary_metric_analysis", "Last canary analysis result per metric", [*canary, "metric"]
        )
        # prometheus-client appends _total to counters, as Flagger's names end.
        self.successes = Counter(
            f"{prefix}_canary_successes", "Total number of canary successes", result, registry=self.registry
        )
        self.failures = Counter(
            f"{prefix}_canary_failures", "Total number of canary failures", result, registry=self.registry
        )
        # --- canaryctl's extras -----------------------------------------------------------------------
        self.canary_info = gauge(
            "canary_info",
            "1 per Canary: its object name, router and strategy, by target name",
            [*canary, "canary", "provider", "strategy"],
            own=True,
        )
        self.phase = gauge(
            "canary_phase",
            "1 for the Canary's current phase (no series for other phases)",
            [*canary, "phase"],
            own=True,
        )
        self.steps = gauge("canary_steps", "Steps in the rollout's compiled step list", canary, own=True)
        self.steps_completed = gauge("canary_steps_completed", "Steps completed so far", canary, own=True)
        self.mirror_weight = gauge("canary_mirror_weight", "Percent of traffic mirrored", canary, own=True)
        self.failed_checks = gauge("canary_failed_checks", "Failed checks of this rollout", canary, own=True)
        self.threshold = gauge(
            "canary_failed_checks_threshold", "Failed checks that roll back", canary, own=True
        )
        self.interval = gauge(
            "canary_analysis_interval_seconds", "Seconds between analysis checks", canary, own=True
        )
        self.metric_threshold = gauge(
            "canary_metric_threshold",
            "A metric's thresholdRange bound, in canary_metric_analysis units",
            [*canary, "metric", "bound"],
            own=True,
        )
        self.last_progress = gauge(
            "canary_last_progress_timestamp_seconds",
            "When the rollout last moved (phase, step, check or weight), or now while nothing is due",
            canary,
            own=True,
        )
        self.webhook_duration = Histogram(
            "canaryctl_webhook_duration_seconds",
            "Webhook call latency including retries",
            [*canary, "webhook", "type", "success"],
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "canaryctl_reconcile_errors",
            "Reconciliations that ended in an unexpected error",
            canary,
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], set[tuple[Gauge | Counter, tuple[str, ...]]]] = {}
        self._progress: dict[tuple[str, str], _Progress] = {}
        self._phases: dict[tuple[str, str], tuple[str, ...]] = {}  # the phase series each Canary has

    # --- per tick -----------------------------------------------------------------------------------

    def _set(self, canary: Canary, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        """Sets a per-canary series and remembers it, so ``forget`` can drop exactly what was set."""
        gauge.labels(*labels).set(value)
        self._series.setdefault(_ids(canary), set()).add((gauge, labels))

    def _analysis_value(self, canary: Canary, metric: str, value: float) -> float:
        if self.compat is Compat.FLAGGER and _is_builtin_duration(canary, metric):
            return value / 1000.0
        return value

    def record_status(self, canary: Canary) -> None:
        """Every gauge that follows the Canary's status (Flagger's status and weights, and the extras)."""
        ids = _ids(canary)
        name, namespace = ids
        status = canary.status
        phase = status.phase if status else None
        weight = status.canary_weight if status else 0
        self._set(canary, self.status, ids, status_value(phase))
        self._set(canary, self.weight, (f"{name}-primary", namespace), 100 - weight)
        self._set(canary, self.weight, (name, namespace), weight)
        info = (canary.metadata.name or "", canary.spec.provider or "", deployment_strategy(canary))
        self._set(canary, self.canary_info, (*ids, *info), 1)
        self._set_phase(canary, phase)
        analysis = canary.spec.effective_analysis
        steps = compile_steps(canary.spec)
        completed = status.current_step if status else 0
        self._set(canary, self.steps, ids, len(steps))
        self._set(canary, self.steps_completed, ids, completed)
        self._set(canary, self.mirror_weight, ids, status.mirror_weight if status else 0)
        self._set(canary, self.failed_checks, ids, status.failed_checks if status else 0)
        self._set(canary, self.threshold, ids, analysis.failure_threshold)
        self._set(canary, self.interval, ids, analysis.interval_seconds)
        # The error counter exists from the first tick at 0, so rate() and increase() see its first error.
        self.reconcile_errors.labels(*ids)
        self._series.setdefault(ids, set()).add((self.reconcile_errors, ids))
        for metric in status.metrics if status else []:
            for bound, limit in (("min", metric.min), ("max", metric.max)):
                if limit is not None:
                    value = self._analysis_value(canary, metric.name, limit)
                    self._set(canary, self.metric_threshold, (*ids, metric.name, bound), value)
        paused = bool(status and status.paused) or (
            completed < len(steps) and steps[completed].kind is StepKind.PAUSE
        )
        position = (status.last_applied_spec, phase, completed, status.iterations, weight) if status else ()
        self._moved(canary, position, still=phase not in MOVING_PHASES or paused)

    def _set_phase(self, canary: Canary, phase: Phase | None) -> None:
        """Only the current phase has a series: one per phase at 0 or 1 was eleven per Canary, held and
        exposed for every Canary; the previous phase's series goes when the phase changes."""
        ids = _ids(canary)
        labels = (*ids, phase.value) if phase is not None else None
        previous = self._phases.get(ids)
        if previous is not None and previous != labels:
            self.phase.remove(*previous)
            self._series.get(ids, set()).discard((self.phase, previous))
            del self._phases[ids]
        if labels is not None:
            self._set(canary, self.phase, labels, 1)
            self._phases[ids] = labels

    def _moved(self, canary: Canary, position: tuple[object, ...], still: bool) -> None:
        """A rollout moves when its position changes; while nothing is due (idle, paused) it never lags."""
        now = self._clock()
        key = _ids(canary)
        last = self._progress.get(key)
        if still or last is None or last.position != position:
            last = self._progress[key] = _Progress(position, now)
        self._set(canary, self.last_progress, key, last.since)

    def record_tick(self, before: Canary, after: Canary, seconds: float) -> None:
        """One reconcile: ``before`` as read, ``after`` with the status the tick stored."""
        self.record_status(after)
        old = before.status.phase if before.status else None
        new = after.status.phase if after.status else None
        failed_check = (after.status.failed_checks if after.status else 0) > (
            before.status.failed_checks if before.status else 0
        )
        # As Flagger: the ticks of the analysis, not one that rolls back without checking (a deadline).
        if old in ANALYSIS_PHASES and (new is not Phase.FAILED or failed_check):
            self.duration.labels(*_ids(after)).observe(seconds)
        for metric in after.status.metrics if after.status else []:
            if metric.value is not None:
                self.record_metric(after, metric.name, metric.value)
        if new in RESULT_PHASES and new is not old:
            self.record_result(after, promoted=new is Phase.SUCCEEDED)

    def record_metric(self, canary: Canary, metric: str, value: float) -> None:
        labels = (*_ids(canary), metric)
        self._set(canary, self.metric_value, labels, self._analysis_value(canary, metric, value))

    def record_result(self, canary: Canary, promoted: bool) -> None:
        counter = self.successes if promoted else self.failures
        analysis_status = SKIPPED if canary.spec.skip_analysis and promoted else COMPLETED
        counter.labels(*_ids(canary), deployment_strategy(canary), analysis_status).inc()

    def observe_webhook(
        self, canary: Canary, hook: CanaryWebhook, result: HookResult, seconds: float
    ) -> None:
        """Matches ``WebhookClient``'s observer signature, so it can be passed as ``observe=``."""
        labels = (*_ids(canary), hook.name, hook.type.value, str(result.success).lower())
        self.webhook_duration.labels(*labels).observe(seconds)

    def reconcile_error(self, target: str, namespace: str) -> None:
        """Takes names, not a Canary: the object that failed may not even validate."""
        self.reconcile_errors.labels(target, namespace).inc()

    def set_total(self, namespace: str, count: int) -> None:
        self.total.labels(namespace).set(count)

    def forget(self, canary: Canary) -> None:
        """Drops a deleted canary's gauges so dashboards stop showing its last values."""
        self._progress.pop(_ids(canary), None)
        self._phases.pop(_ids(canary), None)
        for gauge, labels in self._series.pop(_ids(canary), set()):
            try:
                gauge.remove(*labels)
            except KeyError:
                continue

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


@dataclass
class MetricsServer:
    """A background /metrics HTTP server (prometheus-client's stdlib WSGI server on a thread)."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: ControllerMetrics, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Starts serving ``metrics`` on ``host:port`` (port 0 picks a free one); stop it with ``stop()``."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(server, thread)
