"""The canary state machine: ``reconcile(canary, observations) -> Decision | Need``.

Pure and synchronous. One call is one tick. When a tick reaches a gate whose data the runner has not
gathered yet (webhook results, metric values, the fastFail error sample) it returns a ``Need``; the
runner gathers exactly that, adds it to the observations and calls again. Only the gates a tick really
reaches are ever asked for, so a webhook with side effects (a load test) is never called by mistake.

All durable state is in ``CanaryStatus``: a restarted controller calls ``reconcile`` with the stored
status and continues at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from canaryctl.api.control import CommandKind
from canaryctl.api.duration import parse_duration
from canaryctl.api.models import (
    Canary,
    CanaryMetric,
    CanarySpec,
    CanaryStatus,
    CanaryWebhook,
    Condition,
    ConditionStatus,
    HTTPMatchRequest,
    MetricStatus,
    Phase,
    Severity,
    Verdict,
    WebhookStatus,
    WebhookType,
)
from canaryctl.engine.clock import seconds_since, to_rfc3339
from canaryctl.engine.judge import judge
from canaryctl.engine.steps import Step, StepKind, compile_steps
from canaryctl.engine.types import (
    Action,
    CallHooks,
    Decision,
    ErrorSample,
    Event,
    HookResult,
    MetricRequest,
    Observations,
    RouteState,
    SetRoutes,
    Workload,
    WorkloadOp,
)

POLL_SECONDS = 1.0
IDLE_PHASES = (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED, Phase.WAITING)
ANALYSIS_PHASES = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
ACTIVE_PHASES = (*ANALYSIS_PHASES, Phase.WAITING, Phase.PROMOTING)


def record_hook_result(status: CanaryStatus, hook: CanaryWebhook, result: HookResult, now: str) -> None:
    """Keep the last result of each webhook in status, for the plugin and the alerts."""
    entry = WebhookStatus(
        name=hook.name,
        type=hook.type,
        success=result.success,
        status_code=result.status_code,
        message=result.message,
        time=now,
    )
    kept = [w for w in status.webhooks if (w.name, w.type) != (hook.name, hook.type)]
    status.webhooks = [*kept, entry]


def hook_key(hook: CanaryWebhook) -> str:
    return f"{hook.type.value}/{hook.name}"


@dataclass(frozen=True)
class Need:
    """Data the tick needs before it can decide."""

    hooks: tuple[CanaryWebhook, ...] = ()
    metrics: tuple[MetricRequest, ...] = ()
    error_sample_period: float | None = None


class _NeedData(Exception):
    def __init__(self, need: Need) -> None:
        super().__init__("need data")
        self.need = need


def route_of(status: CanaryStatus, match: tuple[HTTPMatchRequest, ...]) -> RouteState:
    return RouteState(
        canary_weight=status.canary_weight,
        mirror_weight=status.mirror_weight,
        match=match if status.header_route else (),
        fault=status.fault,
    )


@dataclass
class _Pending:
    """Manual commands accepted this tick."""

    abort: bool = False
    retry: bool = False
    skip: bool = False
    promote_step: bool = False
    promote_full: bool = False


@dataclass
class _Tick:
    canary: Canary
    obs: Observations
    status: CanaryStatus
    steps: tuple[Step, ...]
    actions: list[Action] = field(default_factory=list)
    requeue: float = 60.0
    force_routes: bool = False
    pending: _Pending = field(default_factory=_Pending)

    # --- small helpers --------------------------------------------------------------------------------

    @property
    def spec(self) -> CanarySpec:
        return self.canary.spec

    @property
    def now(self) -> str:
        return to_rfc3339(self.obs.now)

    @property
    def interval(self) -> float:
        return float(self.canary.spec.effective_analysis.interval_seconds)

    @property
    def ref(self) -> str:
        meta = self.canary.metadata
        return f"{meta.name}.{meta.namespace}"

    @property
    def target(self) -> str:
        return f"{self.canary.spec.target_ref.name}.{self.canary.metadata.namespace}"

    @property
    def header_match(self) -> tuple[HTTPMatchRequest, ...]:
        for step in self.steps:
            if step.kind is StepKind.HEADER_ROUTE:
                return step.match
        return ()

    def event(
        self, reason: str, message: str, *, warning: bool = False, severity: Severity | None = None
    ) -> None:
        self.actions.append(Event(reason=reason, message=message, warning=warning, severity=severity))

    def set_phase(self, phase: Phase, message: str) -> None:
        if self.status.phase != phase:
            self.status.last_transition_time = self.now
        self.status.phase = phase
        self.status.message = message

    def hooks_of(
        self, kind: WebhookType, hooks: tuple[CanaryWebhook, ...] | None = None
    ) -> list[CanaryWebhook]:
        source = hooks if hooks is not None else tuple(self.spec.effective_analysis.webhooks or ())
        return [hook for hook in source if hook.type is kind]

    def hook_results(self, hooks: list[CanaryWebhook]) -> list[tuple[CanaryWebhook, HookResult]]:
        missing = tuple(hook for hook in hooks if hook_key(hook) not in self.obs.hooks)
        if missing:
            raise _NeedData(Need(hooks=missing))
        results = [(hook, self.obs.hooks[hook_key(hook)]) for hook in hooks]
        for hook, result in results:
            self.record_hook(hook, result)
        return results

    def record_hook(self, hook: CanaryWebhook, result: HookResult) -> None:
        record_hook_result(self.status, hook, result, self.now)

    def gate(self, kind: WebhookType, hooks: tuple[CanaryWebhook, ...] | None = None) -> CanaryWebhook | None:
        """The first failing hook of a gate type, or None when the gate is open."""
        for hook, result in self.hook_results(self.hooks_of(kind, hooks)):
            if not result.success:
                if not hook.mute_alert:
                    self.event(
                        "HookFailed",
                        f"{kind.value} hook {hook.name} failed: {result.message}",
                        warning=True,
                        severity=Severity.WARN,
                    )
                return hook
        return None

    def record_metrics(self, statuses: list[MetricStatus]) -> None:
        names = {m.name for m in statuses}
        self.status.metrics = [m for m in self.status.metrics if m.name not in names] + statuses

    # --- entry ------------------------------------------------------------------------------------------

    def run(self) -> None:
        if self.spec.suspend:
            self.status.message = "Canary analysis suspended"
            self.requeue = self.interval
            return
        self.accept_command()
        phase = self.status.phase
        if phase is None:
            self.initialize()
        elif phase is Phase.INITIALIZING:
            self.finish_initialization()
        elif phase in IDLE_PHASES:
            self.idle()
        elif phase in ANALYSIS_PHASES:
            self.progress()
        elif phase is Phase.PROMOTING:
            self.promoting()
        elif phase is Phase.FINALISING:
            self.finalise()

    def accept_command(self) -> None:
        command = self.obs.command
        if command is None or command.id == self.status.last_handled_command:
            return
        self.status.last_handled_command = command.id
        kind = command.kind
        if kind is CommandKind.PAUSE:
            self.status.paused = True
            self.event("Paused", f"Rollout of {self.ref} paused by user")
        elif kind is CommandKind.RESUME:
            self.status.paused = False
            self.event("Resumed", f"Rollout of {self.ref} resumed by user")
        elif kind is CommandKind.ABORT:
            self.pending.abort = True
        elif kind is CommandKind.RETRY:
            self.pending.retry = True
        elif kind is CommandKind.SKIP:
            self.pending.skip = True
        elif kind is CommandKind.PROMOTE:
            self.pending.promote_step = True
        elif kind is CommandKind.PROMOTE_FULL:
            self.pending.promote_full = True

    # --- initialization ---------------------------------------------------------------------------------

    def initialize(self) -> None:
        self.actions.append(Workload(WorkloadOp.INITIALIZE))
        self.set_phase(Phase.INITIALIZING, f"Initializing {self.ref}: creating primary and services")
        self.event("Synced", f"Initialization of {self.ref} started")
        self.requeue = POLL_SECONDS

    def finish_initialization(self) -> None:
        if not self.obs.primary.ready:
            self.wait_or_fail(f"primary of {self.target} not ready: {self.obs.primary.message}")
            return
        self.status.held_since = None
        self.status.last_applied_spec = self.obs.revision
        self.status.last_promoted_spec = self.obs.revision
        self.status.tracked_configs = self.obs.tracked_configs
        self.reset_routes()
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_DOWN))
        self.set_phase(Phase.INITIALIZED, "Installation successful")
        self.event("Synced", f"Initialization done! {self.ref}", severity=Severity.INFO)
        self.requeue = self.interval

    # --- waiting for a new revision ---------------------------------------------------------------------

    def idle(self) -> None:
        self.requeue = self.interval
        revision = self.obs.revision
        if revision is None:
            return
        if self.pending.retry and self.status.phase is Phase.FAILED:
            self.event("Retry", f"Retrying rollout of {self.ref} by user request")
            self.start(revision)
            return
        if revision == self.status.last_applied_spec:
            return
        if revision == self.status.last_promoted_spec:
            # A revert to what the primary already runs: nothing to analyse.
            self.status.last_applied_spec = revision
            phase = Phase.SUCCEEDED if self.status.phase is Phase.WAITING else self.status.phase
            self.set_phase(phase or Phase.INITIALIZED, "Revision is already promoted; nothing to analyse")
            return
        failing = self.gate(WebhookType.CONFIRM_ROLLOUT)
        if failing is not None:
            self.set_phase(Phase.WAITING, f"Halt advancement {self.ref} waiting for approval {failing.name}")
            return
        self.start(revision)

    def start(self, revision: str) -> None:
        restarted = self.status.phase in ANALYSIS_PHASES
        status = self.status
        status.last_applied_spec = revision
        status.tracked_configs = self.obs.tracked_configs
        status.failed_checks = 0
        status.total_steps = len(self.steps)
        status.pre_rollout_done = False
        status.metrics = []
        self.reset_routes()
        self.enter(0)
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_UP))
        self.set_phase(Phase.PROGRESSING, "New revision detected, progressing canary analysis")
        verb = "Restarting analysis" if restarted else "Scaling up"
        self.event("Synced", f"New revision detected! {verb} {self.target}", severity=Severity.INFO)
        self.requeue = POLL_SECONDS

    # --- analysis ---------------------------------------------------------------------------------------

    def progress(self) -> None:
        revision = self.obs.revision
        if revision is not None and revision != self.status.last_applied_spec:
            self.start(revision)
            return
        if self.pending.abort:
            self.rollback("Rollback requested by user (abort)")
            return
        if self.status.paused:
            self.status.message = "Rollout paused by user"
            self.requeue = self.interval
            return
        for hook, result in self.hook_results(self.hooks_of(WebhookType.ROLLBACK)):
            if result.success:
                self.rollback(
                    f"Rolling back {self.ref}: rollback hook {hook.name} returned {result.status_code}"
                )
                return
        if not self.obs.canary.ready:
            self.wait_or_fail(f"canary {self.target} not ready: {self.obs.canary.message}")
            return
        if self.fast_fail_tripped():
            return
        if not self.status.pre_rollout_done:
            failing = self.gate(WebhookType.PRE_ROLLOUT)
            if failing is not None:
                self.failed_check(f"Halt advancement {self.ref}: pre-rollout check {failing.name} failed")
                return
            self.status.pre_rollout_done = True
        if self.spec.skip_analysis or self.pending.skip or self.pending.promote_full:
            self.start_promotion("analysis skipped" if not self.pending.promote_full else "promoted by user")
            return
        index = self.status.current_step
        if index >= len(self.steps):
            self.confirm_promotion()
            return
        self.run_step(self.steps[index])

    def fast_fail_tripped(self) -> bool:
        fast_fail = self.spec.effective_analysis.fast_fail
        routes = route_of(self.status, ())
        exposed = routes.canary_weight > 0 or routes.mirror_weight > 0 or self.status.header_route
        if fast_fail is None or not exposed:
            return False
        period = max(1.0, parse_duration(fast_fail.period))
        self.requeue = min(self.requeue, period)
        sample = self.error_sample(period)
        if sample is None or sample.requests < fast_fail.min_requests:
            return False
        rate = 100.0 * sample.errors / sample.requests
        if rate <= fast_fail.max_error_rate:
            return False
        self.rollback(
            f"fastFail: canary error rate {rate:.1f}% over {sample.requests:.0f} requests "
            f"exceeds {fast_fail.max_error_rate:g}%"
        )
        return True

    def error_sample(self, period: float) -> ErrorSample | None:
        if not self.obs.error_sample_measured:
            raise _NeedData(Need(error_sample_period=period))
        return self.obs.error_sample

    def run_step(self, step: Step) -> None:
        status = self.status
        if step.kind is StepKind.SET_WEIGHT:
            if step.weight > status.canary_weight:
                failing = self.gate(WebhookType.CONFIRM_TRAFFIC_INCREASE)
                if failing is not None:
                    status.message = f"Waiting for approval to increase traffic: {failing.name}"
                    self.requeue = self.interval
                    return
            status.canary_weight = step.weight
            self.event("Synced", f"Advance {self.ref} canary weight {step.weight}")
            self.advance()
        elif step.kind is StepKind.HEADER_ROUTE:
            status.header_route = True
            self.event("Synced", f"Advance {self.ref}: routing matching requests to canary")
            self.advance()
        elif step.kind is StepKind.MIRROR:
            status.mirror_weight = step.mirror
            self.event("Synced", f"Advance {self.ref}: mirroring {step.mirror}% of traffic to canary")
            self.advance()
        elif step.kind is StepKind.PAUSE:
            self.pause(step)
        else:
            self.analyse(step)

    def pause(self, step: Step) -> None:
        if self.pending.promote_step:
            self.event("Synced", f"Pause of {self.ref} ended by user")
            self.advance()
            return
        if step.duration is None:
            self.status.message = "Paused until promoted (kubectl canary promote)"
            self.requeue = self.interval
            return
        elapsed = seconds_since(self.status.step_started_at, self.obs.now) or 0.0
        if elapsed >= step.duration:
            self.advance()
            return
        self.status.message = f"Paused, {step.duration - elapsed:.0f}s left"
        self.requeue = min(self.requeue, step.duration - elapsed)

    def analyse(self, step: Step) -> None:
        if self.pending.promote_step:
            self.event("Synced", f"Step {self.status.current_step + 1} of {self.ref} skipped by user")
            self.advance()
            return
        if not self.check_due():
            return
        outcome = self.check(step.metrics, step.webhooks, caller_side=step.fault is not None)
        if outcome is Verdict.PASS:
            self.status.iterations += 1
            if self.status.iterations >= step.iterations:
                self.advance()
            else:
                self.status.message = f"Check {self.status.iterations}/{step.iterations} passed"
                self.requeue = min(self.requeue, self.interval)

    def check_due(self) -> bool:
        started = self.status.last_analysis_at or self.status.step_started_at
        elapsed = seconds_since(started, self.obs.now)
        if elapsed is not None and elapsed < self.interval:
            self.requeue = min(self.requeue, self.interval - elapsed)
            return False
        return True

    def check(
        self,
        metrics: tuple[CanaryMetric, ...] | None,
        webhooks: tuple[CanaryWebhook, ...] | None,
        caller_side: bool,
    ) -> Verdict:
        """One analysis check: rollout hooks and metrics. PASS, FAIL (a failed check was counted) or
        NO_DATA (held)."""
        analysis = self.spec.effective_analysis
        chosen = metrics if metrics is not None else tuple(analysis.metrics or ())
        hooks = self.hooks_of(WebhookType.ROLLOUT, webhooks)
        missing_hooks = tuple(h for h in hooks if hook_key(h) not in self.obs.hooks)
        missing_metrics = tuple(
            MetricRequest(metric, caller_side) for metric in chosen if metric.name not in self.obs.metrics
        )
        if missing_hooks or missing_metrics:
            raise _NeedData(Need(hooks=missing_hooks, metrics=missing_metrics))
        self.status.last_analysis_at = self.now
        self.requeue = min(self.requeue, self.interval)
        for hook, result in self.hook_results(hooks):
            if not result.success:
                self.failed_check(
                    f"Halt advancement {self.ref}: rollout hook {hook.name} failed: {result.message}",
                    alert=not hook.mute_alert,
                )
                return Verdict.FAIL
        judged = [judge(metric, self.obs.metrics.get(metric.name), self.now) for metric in chosen]
        self.record_metrics(judged)
        failed = [m for m in judged if m.verdict is Verdict.FAIL]
        if failed:
            self.failed_check(f"Halt advancement {self.ref}: {failed[0].message}")
            return Verdict.FAIL
        held = [m for m in judged if m.verdict is not Verdict.PASS]
        if held:
            self.hold(f"Halt advancement {self.ref}: {held[0].message}")
            return Verdict.NO_DATA
        self.status.held_since = None
        return Verdict.PASS

    def hold(self, message: str) -> None:
        """Missing data: no step forward, no failed check, but the progress deadline keeps running."""
        self.wait_or_fail(message)
        self.requeue = min(self.requeue, self.interval)

    def wait_or_fail(self, message: str) -> None:
        if self.status.held_since is None:
            self.status.held_since = self.now
        held_for = seconds_since(self.status.held_since, self.obs.now) or 0.0
        deadline = self.spec.progress_deadline_seconds
        if held_for >= deadline:
            self.rollback(f"Progress deadline exceeded ({deadline}s): {message}")
            return
        self.status.message = message
        self.requeue = min(self.requeue, POLL_SECONDS * 5)

    def failed_check(self, message: str, *, alert: bool = True) -> None:
        status = self.status
        status.failed_checks += 1
        status.held_since = None
        threshold = self.spec.effective_analysis.failure_threshold
        self.event("Synced", message, warning=True, severity=Severity.WARN if alert else None)
        if status.failed_checks >= threshold:
            self.rollback(f"Rolling back {self.ref} failed checks threshold reached {status.failed_checks}")
            return
        status.message = f"{message} ({status.failed_checks}/{threshold} failed checks)"
        self.requeue = min(self.requeue, self.interval)

    def advance(self) -> None:
        status = self.status
        leaving = self.steps[status.current_step]
        if leaving.kind is StepKind.ANALYSIS and leaving.mirror:
            status.mirror_weight = 0
        if leaving.fault is not None:
            status.fault = None
        self.enter(status.current_step + 1)
        self.requeue = 0.0

    def enter(self, index: int) -> None:
        """Start step ``index``: a timed mirror or fault step switches its routing on now."""
        status = self.status
        status.current_step = index
        status.iterations = 0
        status.step_started_at = self.now
        status.last_analysis_at = None
        status.held_since = None
        if index < len(self.steps):
            entering = self.steps[index]
            if entering.kind is StepKind.ANALYSIS and entering.mirror:
                status.mirror_weight = entering.mirror
            if entering.fault is not None:
                status.fault = entering.fault
            status.message = f"Step {index + 1}/{len(self.steps)}: {entering.describe()}"

    # --- promotion --------------------------------------------------------------------------------------

    def confirm_promotion(self) -> None:
        # Keep judging the canary while a human decides: it still serves traffic.
        waiting = self.status.phase is Phase.WAITING_PROMOTION and self.check_due()
        if waiting and self.check(None, None, caller_side=False) is not Verdict.PASS:
            return
        failing = self.gate(WebhookType.CONFIRM_PROMOTION)
        if failing is not None:
            self.set_phase(
                Phase.WAITING_PROMOTION,
                f"Halt {self.ref} advancement waiting for promotion approval {failing.name}",
            )
            self.requeue = min(self.requeue, self.interval)
            return
        self.start_promotion("analysis passed")

    def start_promotion(self, why: str) -> None:
        self.status.mirror_weight = 0
        self.status.fault = None
        self.status.held_since = None
        self.status.step_started_at = self.now
        self.status.last_analysis_at = None
        self.actions.append(Workload(WorkloadOp.PROMOTE))
        self.set_phase(Phase.PROMOTING, f"Promoting {self.ref}: {why}")
        primary = f"{self.spec.target_ref.name}-primary.{self.canary.metadata.namespace}"
        self.event("Synced", f"Copying {self.target} template spec to {primary}")
        self.requeue = POLL_SECONDS

    def promoting(self) -> None:
        if not self.obs.primary.ready:
            self.wait_or_fail(
                f"primary of {self.target} not ready after promotion: {self.obs.primary.message}"
            )
            return
        self.status.held_since = None
        step = self.spec.effective_analysis.step_weight_promotion
        if step and self.status.canary_weight > 0:
            if not self.check_due():
                return
            self.status.last_analysis_at = self.now
            self.status.canary_weight = max(0, self.status.canary_weight - step)
            self.event("Synced", f"Advance {self.ref} primary weight {100 - self.status.canary_weight}")
            if self.status.canary_weight > 0:
                self.requeue = self.interval
                return
        self.reset_routes()
        self.set_phase(Phase.FINALISING, f"Routing all traffic to primary of {self.ref}")
        self.requeue = POLL_SECONDS

    def finalise(self) -> None:
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_DOWN))
        self.status.last_promoted_spec = self.status.last_applied_spec
        self.status.current_step = len(self.steps)
        self.set_phase(Phase.SUCCEEDED, "Canary analysis completed successfully, promotion finished")
        self.event("Synced", f"Promotion completed! Scaling down {self.target}", severity=Severity.INFO)
        self.post_rollout()
        self.requeue = self.interval

    # --- rollback ---------------------------------------------------------------------------------------

    def rollback(self, reason: str) -> None:
        self.reset_routes()
        self.status.held_since = None
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_DOWN))
        self.set_phase(Phase.FAILED, reason)
        self.event("Synced", reason, warning=True)
        self.event(
            "Synced",
            f"Canary failed! Scaling down {self.target}: {reason}",
            warning=True,
            severity=Severity.ERROR,
        )
        self.post_rollout()
        self.requeue = self.interval

    def reset_routes(self) -> None:
        self.status.canary_weight = 0
        self.status.mirror_weight = 0
        self.status.header_route = False
        self.status.fault = None
        self.force_routes = True

    def post_rollout(self) -> None:
        hooks = tuple(self.hooks_of(WebhookType.POST_ROLLOUT))
        if hooks:
            self.actions.append(CallHooks(hooks))


def _conditions(status: CanaryStatus, now: str) -> list[Condition]:
    phase = status.phase
    if phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
        state = ConditionStatus.TRUE
    elif phase is Phase.FAILED:
        state = ConditionStatus.FALSE
    else:
        state = ConditionStatus.UNKNOWN
    reason = phase.value if phase is not None else "Pending"
    previous = {c.type: c for c in status.conditions}
    result = []
    for kind in ("Promoted", "Ready"):
        old = previous.get(kind)
        changed = old is None or old.status != state or old.reason != reason
        result.append(
            Condition(
                type=kind,
                status=state,
                reason=reason,
                message=status.message,
                last_transition_time=now if changed or old is None else old.last_transition_time,
                last_update_time=now if changed or old is None else old.last_update_time,
            )
        )
    return result


def reconcile(canary: Canary, obs: Observations) -> Decision | Need:
    """Decide one tick. Deterministic: the same canary and observations give the same result."""
    status = (canary.status or CanaryStatus()).model_copy(deep=True)
    tick = _Tick(canary=canary, obs=obs, status=status, steps=compile_steps(canary.spec))
    tick.requeue = tick.interval
    before = route_of(canary.status or CanaryStatus(), tick.header_match)
    try:
        tick.run()
    except _NeedData as needed:
        return needed.need
    after = route_of(tick.status, tick.header_match)
    actions = list(tick.actions)
    if tick.force_routes or after != before:
        actions.insert(0, SetRoutes(after))
    tick.status.total_steps = len(tick.steps)
    tick.status.conditions = _conditions(tick.status, tick.now)
    return Decision(status=tick.status, actions=tuple(actions), requeue_after=max(0.0, tick.requeue))
