"""One engine tick against real systems: observe through the ports, decide, act.

Shared by the Kubernetes operator and the local runtime. The decision's status is returned only after
every action succeeded; when an action fails the caller keeps the old status and retries later, so a
flaky router or API server never leaves status claiming what was not done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from canaryctl.api.models import Canary, CanaryWebhook, Phase, Severity, Verdict, WebhookType
from canaryctl.engine import Need, hook_key, reconcile
from canaryctl.engine.clock import to_rfc3339
from canaryctl.engine.machine import record_hook_result
from canaryctl.engine.types import (
    CallHooks,
    Command,
    Decision,
    Event,
    HookResult,
    MetricObservation,
    MetricRequest,
    Observations,
    SetRoutes,
    Workload,
)
from canaryctl.ports import Alert, Alerts, Analyzer, Events, Hooks, Router, Workloads
from canaryctl.telemetry.tracing import Tracer, rollout_revision

log = logging.getLogger(__name__)

# A tick passes a few gates (fastFail, analysis metrics, ...) plus one round per webhook it calls: the
# engine asks for webhooks one at a time, in order.
BASE_GATHER_ROUNDS = 8
# A tick cancelled once it has begun to act may finish this long (inside a pod's default 30 s grace).
COMMIT_GRACE_SECONDS = 20.0


class ActionFailed(Exception):
    """An action could not be carried out; the tick's status must not be stored."""


@dataclass(frozen=True)
class Ports:
    workloads: Workloads
    router: Router
    analyzer: Analyzer
    hooks: Hooks
    alerts: Alerts
    events: Events
    cluster: str = "local"
    # Spans per step, metric check, webhook and router call; exporters come from OTEL_* (none by default).
    tracer: Tracer = field(default_factory=Tracer)


async def observe(canary: Canary, ports: Ports, now: datetime, command: Command | None) -> Observations:
    revision, primary, canary_ready = await asyncio.gather(
        ports.workloads.revision(canary),
        ports.workloads.readiness(canary, primary=True),
        ports.workloads.readiness(canary, primary=False),
    )
    return Observations(
        now=now,
        revision=revision.hash,
        tracked_configs=revision.tracked_configs,
        primary=primary,
        canary=canary_ready,
        command=command,
    )


async def gather(canary: Canary, need: Need, obs: Observations, ports: Ports) -> Observations:
    """Fetch exactly what the engine asked for, concurrently."""
    phase = canary.status.phase if canary.status else None
    checksum = canary.status.last_applied_spec if canary.status else None

    hook_calls = [_call_hook(canary, hook, phase, checksum, ports) for hook in need.hooks]
    measurements = [_measure(canary, request, ports) for request in need.metrics]
    hook_results, metric_results = await asyncio.gather(
        asyncio.gather(*hook_calls), asyncio.gather(*measurements)
    )
    hooks = dict(obs.hooks) | {hook_key(h): r for h, r in zip(need.hooks, hook_results, strict=True)}
    metrics = dict(obs.metrics) | {m.name: m for m in metric_results}
    updated = replace(obs, hooks=hooks, metrics=metrics)
    if need.error_sample_period is not None:
        sample = await ports.analyzer.error_sample(canary, need.error_sample_period)
        updated = replace(updated, error_sample=sample, error_sample_measured=True)
    return updated


async def _call_hook(
    canary: Canary, hook: CanaryWebhook, phase: Phase | None, checksum: str | None, ports: Ports
) -> HookResult:
    with ports.tracer.span("webhook", webhook=hook.name, type=hook.type.value) as span:
        result = await ports.hooks.call(canary, hook, phase, checksum)
        span.set(success=result.success, status_code=result.status_code)
        if not result.success:
            span.fail(result.message)
        return result


async def _measure(canary: Canary, request: MetricRequest, ports: Ports) -> MetricObservation:
    with ports.tracer.span("metric", metric=request.metric.name, caller_side=request.caller_side) as span:
        observation = await ports.analyzer.measure(canary, request.metric, request.caller_side)
        span.set(value=observation.canary.value, provider=observation.provider)
        if observation.error is not None:
            span.fail(observation.error)
        return observation


def gather_rounds(canary: Canary) -> int:
    analysis = canary.spec.effective_analysis
    step_hooks = sum(len(step.analysis.webhooks or []) for step in analysis.steps or [] if step.analysis)
    return BASE_GATHER_ROUNDS + len(analysis.webhooks or []) + step_hooks


async def decide(canary: Canary, obs: Observations, ports: Ports) -> Decision:
    """Run the engine, fetching what it asks for, until it decides."""
    rounds = gather_rounds(canary)
    for _ in range(rounds):
        result = reconcile(canary, obs)
        if isinstance(result, Decision):
            return result
        obs = await gather(canary, result, obs, ports)
    raise RuntimeError(f"engine asked for data more than {rounds} times in one tick")


def _failing_metric(decision: Decision) -> str | None:
    for metric in decision.status.metrics:
        if metric.verdict is Verdict.FAIL:
            return metric.message
    return None


async def _event(canary: Canary, event: Event, decision: Decision, ports: Ports) -> None:
    """Best effort, like every notification: routes and workloads already changed, so a failing Event
    write must not fail the tick (its status would never be stored)."""
    try:
        await ports.events.record(canary, event.reason, event.message, event.warning)
    except Exception as exc:  # any Events backend failure; the tick goes on
        log.warning("event for %s not recorded: %s", canary.metadata.name, exc)
    phase = decision.status.phase
    event_hooks = [h for h in canary.spec.effective_analysis.webhooks or [] if h.type is WebhookType.EVENT]
    await asyncio.gather(
        *(ports.hooks.event(canary, h, phase, event.message, event.warning) for h in event_hooks)
    )
    if event.severity is None:
        return
    alert = Alert(
        canary=canary.metadata.name or "",
        namespace=canary.metadata.namespace or "",
        cluster=ports.cluster,
        phase=phase,
        severity=event.severity,
        message=event.message,
        canary_weight=decision.status.canary_weight,
        failed_checks=decision.status.failed_checks,
        threshold=canary.spec.effective_analysis.failure_threshold,
        failing_metric=_failing_metric(decision) if event.severity is not Severity.INFO else None,
        target=canary.spec.target_ref.name,
    )
    for failure in await ports.alerts.send(canary, alert):
        log.warning("alert not delivered: %s", failure)


async def _post_rollout(
    canary: Canary, hooks: tuple[CanaryWebhook, ...], decision: Decision, ports: Ports
) -> None:
    """Flagger's order: one after another, as listed, stopping at the first failure."""
    phase = decision.status.phase
    for hook in hooks:
        result = await _call_hook(canary, hook, phase, decision.status.last_applied_spec, ports)
        record_hook_result(decision.status, hook, result, to_rfc3339(datetime.now(UTC)))
        if not result.success:
            return


async def act(canary: Canary, decision: Decision, ports: Ports) -> None:
    """Carry out the decision's actions in order. Routing and workload failures raise ActionFailed;
    notifications and events are best effort."""
    for action in decision.actions:
        try:
            if isinstance(action, SetRoutes):
                routes = action.routes
                with ports.tracer.span(
                    "router",
                    router=ports.router.name,
                    weight=routes.canary_weight,
                    mirror=routes.mirror_weight,
                ):
                    await ports.router.apply(canary, routes)
            elif isinstance(action, Workload):
                await ports.workloads.apply(canary, action.op)
        except Exception as exc:
            raise ActionFailed(f"{type(action).__name__} {action}: {exc}") from exc
        if isinstance(action, Event):
            await _event(canary, action, decision, ports)
        elif isinstance(action, CallHooks):
            await _post_rollout(canary, action.hooks, decision, ports)


async def finish_started(work: Awaitable[None], grace: float) -> None:
    """Runs ``work`` to its end even when the caller is cancelled meanwhile (for up to ``grace`` seconds
    more), then passes the cancellation on: a step acted on but not stored would be done twice."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait([task], timeout=grace)
        finally:  # past the grace, or cancelled again meanwhile: the work is not left running alone
            if not task.done():
                task.cancel()
        raise


async def tick(
    canary: Canary,
    ports: Ports,
    now: datetime | None = None,
    command: Command | None = None,
    commit: Callable[[Decision], Awaitable[None]] | None = None,
) -> Decision:
    """Observe, decide and act once. Returns the decision whose status the caller must store, or has
    stored with ``commit``: then a cancellation (the operator stopping) once the tick has begun to act
    waits, up to ``COMMIT_GRACE_SECONDS``, for its actions and ``commit`` to end. Observing (metric
    queries, webhooks) is cancelled at once: nothing was done yet.

    The tick is traced under the rollout of the revision it works on, known once the target is observed;
    a tick with nothing to do records no span."""
    before = canary.status.current_step if canary.status else 0
    obs = await observe(canary, ports, now or datetime.now(UTC), command)
    with ports.tracer.tick(canary, rollout_revision(canary, obs.revision, command)) as traced:
        decision = await decide(canary, obs, ports)
        status = decision.status

        async def act_and_commit() -> None:
            await act(canary, decision, ports)
            if commit is not None:
                await commit(decision)

        phase = status.phase.value if status.phase else None
        step = status.current_step
        span = ports.tracer.span("step", step=step, weight=status.canary_weight, phase=phase)
        with span if step != before else nullcontext():
            await finish_started(act_and_commit(), COMMIT_GRACE_SECONDS)
        traced.end(status)
    return decision
