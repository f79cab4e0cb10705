"""Drives the pure engine tick by tick the way a runner would, with scripted observations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Canary, CanaryStatus, Phase
from canaryctl.engine import Need, hook_key, reconcile
from canaryctl.engine.types import (
    Action,
    Command,
    Decision,
    ErrorSample,
    HookResult,
    MetricObservation,
    MetricSample,
    Observations,
    Readiness,
    SetRoutes,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def make_canary(analysis: dict[str, Any], **spec: Any) -> Canary:
    document = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, **analysis},
            **spec,
        },
    }
    return Canary.model_validate(document)


MetricFn = Callable[[str], MetricObservation]


def metric_value(value: float | None, **counts: float) -> MetricFn:
    return lambda name: MetricObservation(name=name, canary=MetricSample(value, **counts))


@dataclass
class Driver:
    canary: Canary
    now: datetime = START
    revision: str = "rev-1"
    primary_ready: bool = True
    canary_ready: bool = True
    metrics: dict[str, MetricFn] = field(default_factory=dict)
    hooks: dict[str, bool] = field(default_factory=dict)
    error_sample: ErrorSample | None = None
    command: Command | None = None
    calls: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    routes: list[SetRoutes] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    needs: list[Need] = field(default_factory=list)
    commands: int = 0

    @property
    def status(self) -> CanaryStatus:
        return self.canary.status or CanaryStatus()

    def observations(self) -> Observations:
        return Observations(
            now=self.now,
            revision=self.revision,
            tracked_configs={},
            primary=Readiness(self.primary_ready, "" if self.primary_ready else "0/1 ready"),
            canary=Readiness(self.canary_ready, "" if self.canary_ready else "0/1 ready"),
            command=self.command,
        )

    def gather(self, obs: Observations, need: Need) -> Observations:
        hooks = dict(obs.hooks)
        for hook in need.hooks:
            self.calls.append(f"{hook.type.value}:{hook.name}")
            ok = self.hooks.get(hook.name, True)
            hooks[hook_key(hook)] = HookResult(
                hook.name, hook.type, ok, 200 if ok else 500, "" if ok else "boom"
            )
        metrics = dict(obs.metrics)
        for request in need.metrics:
            name = request.metric.name
            self.calls.append(f"metric:{name}{':caller' if request.caller_side else ''}")
            source = self.metrics.get(name)
            metrics[name] = source(name) if source else MetricObservation(name, MetricSample(None))
        sample = obs.error_sample
        if need.error_sample_period is not None:
            sample = self.error_sample
        return replace(
            obs,
            hooks=hooks,
            metrics=metrics,
            error_sample=sample,
            error_sample_measured=obs.error_sample_measured or need.error_sample_period is not None,
        )

    def tick(self) -> Decision:
        obs = self.observations()
        for _ in range(50):
            result = reconcile(self.canary, obs)
            if isinstance(result, Decision):
                break
            self.needs.append(result)
            obs = self.gather(obs, result)
        else:
            raise AssertionError("engine kept asking for data")
        assert isinstance(result, Decision)
        self.canary = self.canary.model_copy(update={"status": result.status})
        self.decisions.append(result)
        self.actions.extend(result.actions)
        self.routes.extend(a for a in result.actions if isinstance(a, SetRoutes))
        self.command = None
        return result

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def run(
        self, ticks: int = 200, until: Callable[[CanaryStatus], bool] | None = None, max_seconds: float = 3600
    ) -> CanaryStatus:
        """Tick, sleeping as the engine asks, until ``until`` holds or a terminal phase."""
        deadline = self.now + timedelta(seconds=max_seconds)
        stop = until or (lambda s: s.phase in (Phase.SUCCEEDED, Phase.FAILED))
        for _ in range(ticks):
            decision = self.tick()
            if stop(decision.status) or self.now >= deadline:
                return decision.status
            self.advance(max(decision.requeue_after, 0.5))
        return self.status

    def send(self, kind: CommandKind) -> None:
        self.commands += 1
        self.command = Command(kind, f"cmd-{self.commands}")

    def new_revision(self, revision: str) -> None:
        self.revision = revision

    def weights(self) -> list[int]:
        return [r.routes.canary_weight for r in self.routes]
