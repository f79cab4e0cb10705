"""The controller's Prometheus metrics, named after Flagger's with a ``canaryctl_`` prefix.

Each ``ControllerMetrics`` owns its registry, so two controllers (or two tests) in one process never share
series, and Flagger's Grafana dashboards port by renaming the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from canaryctl.api.models import Canary, CanaryWebhook, Phase
from canaryctl.engine.types import HookResult

# Flagger's flagger_canary_status values: 0 while the analysis runs (Progressing), 2 failed, 1 otherwise.
STATUS_RUNNING, STATUS_SUCCEEDED, STATUS_FAILED = 0, 1, 2
_STATUS = {None: STATUS_RUNNING, Phase.PROGRESSING: STATUS_RUNNING, Phase.FAILED: STATUS_FAILED}
_WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _ids(canary: Canary) -> tuple[str, str]:
    return canary.metadata.name or "", canary.metadata.namespace or ""


def deployment_strategy(canary: Canary) -> str:
    """Flagger's strategy label: A/B with match+iterations, blue/green with iterations, else canary."""
    analysis = canary.spec.effective_analysis
    if analysis.steps:
        return "steps"
    if analysis.iterations and analysis.match:
        return "ab_testing"
    if analysis.iterations:
        return "blue_green"
    return "canary"


class ControllerMetrics:
    """Records what the controller observes; ``exposition()`` renders it for a /metrics endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        canary = ["name", "namespace"]
        self.status = Gauge(
            "canaryctl_canary_status",
            "Canary status: 0 running, 1 succeeded, 2 failed",
            canary,
            registry=self.registry,
        )
        self.weight = Gauge(
            "canaryctl_canary_weight",
            "Traffic weight in percent of the primary (<target>-primary) and canary (<target>) workloads",
            ["workload", "namespace"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "canaryctl_canary_duration_seconds",
            "Seconds spent in one canary analysis run",
            canary,
            registry=self.registry,
        )
        self.total = Gauge(
            "canaryctl_canary_total", "Number of Canary objects", ["namespace"], registry=self.registry
        )
        self.metric_value = Gauge(
            "canaryctl_canary_metric_analysis",
            "Last measured value of each analysis metric",
            [*canary, "metric"],
            registry=self.registry,
        )
        self.successes = Counter(
            "canaryctl_canary_successes",
            "Rollouts promoted",
            [*canary, "deployment_strategy"],
            registry=self.registry,
        )
        self.failures = Counter(
            "canaryctl_canary_failures",
            "Rollouts rolled back",
            [*canary, "deployment_strategy"],
            registry=self.registry,
        )
        self.webhook_duration = Histogram(
            "canaryctl_webhook_duration_seconds",
            "Webhook call latency including retries",
            [*canary, "webhook", "type", "success"],
            buckets=_WEBHOOK_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "canaryctl_reconcile_errors",
            "Reconciliations that ended in an unexpected error",
            canary,
            registry=self.registry,
        )
        self._metric_names: dict[tuple[str, str], set[str]] = {}

    def record_status(self, canary: Canary) -> None:
        """Status and both weights from the canary's current status."""
        name, namespace = _ids(canary)
        status = canary.status
        phase = status.phase if status else None
        self.status.labels(name, namespace).set(_STATUS.get(phase, STATUS_SUCCEEDED))
        weight = status.canary_weight if status else 0
        target = canary.spec.target_ref.name
        self.weight.labels(f"{target}-primary", namespace).set(100 - weight)
        self.weight.labels(target, namespace).set(weight)

    def observe_analysis(self, canary: Canary, seconds: float) -> None:
        self.duration.labels(*_ids(canary)).observe(seconds)

    def record_metric(self, canary: Canary, metric: str, value: float) -> None:
        ids = _ids(canary)
        self._metric_names.setdefault(ids, set()).add(metric)
        self.metric_value.labels(*ids, metric).set(value)

    def record_result(self, canary: Canary, promoted: bool) -> None:
        counter = self.successes if promoted else self.failures
        counter.labels(*_ids(canary), deployment_strategy(canary)).inc()

    def observe_webhook(
        self, canary: Canary, hook: CanaryWebhook, result: HookResult, seconds: float
    ) -> None:
        """Matches ``WebhookClient``'s observer signature, so it can be passed as ``observe=``."""
        labels = (*_ids(canary), hook.name, hook.type.value, str(result.success).lower())
        self.webhook_duration.labels(*labels).observe(seconds)

    def reconcile_error(self, name: str, namespace: str) -> None:
        self.reconcile_errors.labels(name, namespace).inc()

    def set_total(self, namespace: str, count: int) -> None:
        self.total.labels(namespace).set(count)

    def forget(self, canary: Canary) -> None:
        """Drops a deleted canary's gauges so dashboards stop showing its last values."""
        name, namespace = _ids(canary)
        target = canary.spec.target_ref.name
        for gauge, labels in (
            (self.status, (name, namespace)),
            (self.weight, (f"{target}-primary", namespace)),
            (self.weight, (target, namespace)),
        ):
            try:
                gauge.remove(*labels)
            except KeyError:
                continue
        for metric in self._metric_names.pop((name, namespace), set()):
            self.metric_value.remove(name, namespace, metric)

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
