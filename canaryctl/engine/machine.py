"""The canary state machine: ``reconcile(canary, observations) -> Decision | Need``.

Pure and synchronous. One call is one tick. When a tick reaches a gate whose data the runner has not
gathered yet (webhook results, metric values, the fastFail error sample) it returns a ``Need``; the
runner gathers exactly that, adds it to the observations and calls again. Only the gates a tick really
reaches are ever asked for, so a webhook with side effects (a load test) is never called by mistake.

All durable state is in ``CanaryStatus``: a restarted controller calls ``reconcile`` with the stored
status and continues at the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from canaryctl.api.control import CommandKind
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
from canaryctl.engine.steps import Position, Step, StepKind, compile_steps, step_positions
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
from canaryctl_mesh.duration import parse_duration

POLL_SECONDS = 1.0
FAST_FAIL = "fastFail"  # the first word of the Failed message when fastFail rolled the canary back
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
    """The manual command accepted this tick, until the part of the tick it applies to takes it."""

    kind: CommandKind | None = None
    taken: bool = False

    def take(self, *kinds: CommandKind) -> bool:
        if self.kind in kinds and not self.taken:
            self.taken = True
            return True
        return False


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

    def run_hooks(self, hooks: list[CanaryWebhook], stop_at: bool) -> list[tuple[CanaryWebhook, HookResult]]:
        """Flagger's order: one hook at a time, as listed, until one's success equals ``stop_at`` (a
        failure for gates and checks, a success for rollback hooks); the rest are not called."""
        results = []
        for hook in hooks:
            result = self.obs.hooks.get(hook_key(hook))
            if result is None:
                raise _NeedData(Need(hooks=(hook,)))
            self.record_hook(hook, result)
            results.append((hook, result))
            if result.success is stop_at:
                break
        return results

    def record_hook(self, hook: CanaryWebhook, result: HookResult) -> None:
        record_hook_result(self.status, hook, result, self.now)

    def gate(self, kind: WebhookType, hooks: tuple[CanaryWebhook, ...] | None = None) -> CanaryWebhook | None:
        """The first failing hook of a gate type, or None when the gate is open."""
        for hook, result in self.run_hooks(self.hooks_of(kind, hooks), stop_at=False):
            if not result.success:
                return hook
        return None

    def alert_for(self, hook: CanaryWebhook) -> Severity | None:
        return None if hook.mute_alert else Severity.WARN

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
        self.report_unused_command(phase)

    def accept_command(self) -> None:
        command = self.obs.command
        if command is None or command.id == self.status.last_handled_command:
            return
        self.status.last_handled_command = command.id
        self.pending.kind = command.kind
        if self.pending.take(CommandKind.PAUSE):
            self.status.paused = True
            self.event("Paused", f"Rollout of {self.ref} paused by user")
        elif self.pending.take(CommandKind.RESUME):
            self.status.paused = False
            self.event("Resumed", f"Rollout of {self.ref} resumed by user")

    def report_unused_command(self, phase: Phase | None) -> None:
        """A command that did not apply is handled all the same (it must not fire later, by surprise),
        so say so where the user looks."""
        kind = self.pending.kind
        if kind is None or self.pending.taken:
            return
        where = phase.value if phase is not None else "not initialized"
        if phase in ANALYSIS_PHASES and self.status.current_step < len(self.steps):
            where += (
                f", at step {self.status.current_step + 1}: {self.steps[self.status.current_step].describe()}"
            )
        self.event(
            "CommandIgnored",
            f"Command {kind.value} for {self.ref} ignored: the canary is {where}",
            warning=True,
        )

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
        if self.status.phase is Phase.FAILED and self.pending.take(CommandKind.RETRY):
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
        # A new revision waits here for confirm-rollout. A person's command decides instead of the hooks:
        # abort rejects the revision, skip/promote-full ship it without analysis, promote starts it.
        if self.pending.take(CommandKind.ABORT):
            self.adopt(revision)
            self.rollback(f"Rollout of {self.target} rejected by user (abort) before it started")
            return
        if self.pending.take(CommandKind.SKIP, CommandKind.PROMOTE_FULL):
            self.adopt(revision)
            self.start_promotion("promoted by user without analysis")
            return
        if not self.pending.take(CommandKind.PROMOTE):
            failing = self.gate(WebhookType.CONFIRM_ROLLOUT)
            if failing is not None:
                if self.status.phase is not Phase.WAITING:
                    self.event(
                        "Synced",
                        f"Halt advancement {self.ref} waiting for approval {failing.name}",
                        warning=True,
                        severity=self.alert_for(failing),
                    )
                self.set_phase(
                    Phase.WAITING, f"Halt advancement {self.ref} waiting for approval {failing.name}"
                )
                return
        self.start(revision)

    def adopt(self, revision: str) -> None:
        """Make ``revision`` the one this rollout is about, from a clean slate."""
        status = self.status
        status.last_applied_spec = revision
        status.tracked_configs = self.obs.tracked_configs
        status.failed_checks = 0
        status.pre_rollout_done = False
        status.metrics = []

    def start(self, revision: str) -> None:
        restarted = self.status.phase in ANALYSIS_PHASES
        self.adopt(revision)
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
        self.realign()
        if self.pending.take(CommandKind.ABORT):
            self.rollback("Rollback requested by user (abort)")
            return
        if self.status.paused:
            self.status.message = "Rollout paused by user"
            self.requeue = self.interval
            return
        # Flagger's order: the primary is checked before the canary, except when no analysis runs. An
        # analysis with a primary that does not serve would compare the canary against nothing.
        if not self.spec.skip_analysis and not self.obs.primary.ready:
            self.wait_or_fail(f"primary of {self.target} not ready: {self.obs.primary.message}")
            return
        if not self.obs.canary.ready:
            self.wait_or_fail(f"canary {self.target} not ready: {self.obs.canary.message}")
            return
        if not self.data_held():
            self.status.held_since = None  # recovered: the next hold gets a whole progress deadline
        # Flagger's order: skipAnalysis before rollback and pre-rollout hooks.
        commanded = self.pending.take(CommandKind.SKIP, CommandKind.PROMOTE_FULL)
        if self.spec.skip_analysis or commanded:
            self.start_promotion("promoted by user" if commanded else "analysis skipped")
            return
        for hook, result in self.run_hooks(self.hooks_of(WebhookType.ROLLBACK), stop_at=True):
            if result.success:
                self.rollback(
                    f"Rolling back {self.ref}: rollback hook {hook.name} returned {result.status_code}"
                )
                return
        if self.fast_fail_tripped():
            return
        if not self.status.pre_rollout_done:
            failing = self.gate(WebhookType.PRE_ROLLOUT)
            if failing is not None:
                self.failed_check(
                    f"Halt advancement {self.ref} pre-rollout check {failing.name} failed "
                    f"{self.obs.hooks[hook_key(failing)].message}",
                    alert=not failing.mute_alert,
                )
                return
            self.status.pre_rollout_done = True
        self.run_steps()

    def run_steps(self) -> None:
        """Run the current step and, when it completes, the next ones in the same tick, as Flagger
        runs a check and the weight increase it allows in one interval: one status write for both. A
        tick runs no routing step (weight, header route, mirror) once its routing changed, so every
        weight is stored and serves before the next and none is skipped: that step waits for the next
        tick (at once). A tick runs at most one check: a step entered in this tick is checked an
        interval later."""
        routes = route_of(self.status, self.header_match)
        requeue = self.requeue
        first = self.status.current_step
        while True:
            index = self.status.current_step
            step = self.steps[index] if index < len(self.steps) else None
            if index != first:
                if step is not None and step.instant and route_of(self.status, self.header_match) != routes:
                    return
                # A canary this tick exposed to traffic is judged by fastFail from its next period on.
                period = self.fast_fail_period()
                self.requeue = requeue if period is None else min(requeue, period)
                if step is not None and step.kind is StepKind.ANALYSIS:
                    self.requeue = min(self.requeue, self.interval)
                    return
            if step is None:
                if any(step.kind is StepKind.CONFIRM_PROMOTION for step in self.steps):
                    self.start_promotion("analysis passed")  # the gate was passed before the switch
                else:
                    self.confirm_promotion(lambda: self.start_promotion("analysis passed"))
                return
            self.run_step(step)
            if self.status.current_step == index or self.status.phase not in ANALYSIS_PHASES:
                return

    def data_held(self) -> bool:
        """The last check found no data (or an inconclusive comparison) and no check has run since."""
        last = self.status.last_analysis_at
        return last is not None and any(
            m.time == last and m.verdict in (Verdict.NO_DATA, Verdict.ERROR, Verdict.INCONCLUSIVE)
            for m in self.status.metrics
        )

    def realign(self) -> None:
        """After an edit of ``spec.analysis`` the stored step may no longer match the traffic. Continue at
        the first step that runs with exactly the current routing (Flagger continues from the current
        weight); else step back to the last analysis at or below the current weight, so no check ahead is
        skipped and traffic never grows without one; else start over from the first step."""
        status = self.status
        here = Position(status.canary_weight, status.mirror_weight, status.header_route)
        positions = step_positions(self.steps)
        if status.current_step < len(positions) and positions[status.current_step] == here:
            return
        exact = [i for i, position in enumerate(positions) if position == here]
        below = [
            i
            for i, step in enumerate(self.steps)
            if step.kind is StepKind.ANALYSIS and positions[i].canary_weight <= status.canary_weight
        ]
        index = exact[0] if exact else below[-1] if below else 0
        position = positions[index]
        status.canary_weight = position.canary_weight
        status.mirror_weight = position.mirror_weight
        status.header_route = position.header_route
        status.fault = None
        self.enter(index)
        if status.phase is Phase.WAITING_PROMOTION and index < len(self.steps):
            self.set_phase(Phase.PROGRESSING, status.message)
        where = self.steps[index].describe() if index < len(self.steps) else "promotion"
        self.event(
            "Synced",
            f"Analysis of {self.ref} changed: continuing at canary weight {status.canary_weight} "
            f"with step {index + 1}/{len(self.steps)} ({where})",
        )

    def fast_fail_period(self) -> float | None:
        """fastFail's period while the canary gets traffic (weight, mirror or header route), else None."""
        fast_fail = self.spec.effective_analysis.fast_fail
        status = self.status
        exposed = status.canary_weight > 0 or status.mirror_weight > 0 or status.header_route
        if fast_fail is None or not exposed:
            return None
        return max(1.0, parse_duration(fast_fail.period))

    def fast_fail_tripped(self) -> bool:
        fast_fail = self.spec.effective_analysis.fast_fail
        period = self.fast_fail_period()
        if fast_fail is None or period is None:
            return False
        self.requeue = min(self.requeue, period)
        sample = self.error_sample(period)
        if sample is None or sample.requests < fast_fail.min_requests:
            return False
        rate = 100.0 * sample.errors / sample.requests
        if rate <= fast_fail.max_error_rate:
            return False
        self.rollback(
            f"{FAST_FAIL}: canary error rate {rate:.1f}% over {sample.requests:.0f} requests "
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
                    # As Flagger: a warning (and alert) each time the gate is asked, once an interval.
                    message = (
                        f"Halt advancement {self.ref} waiting for traffic increase approval {failing.name}"
                    )
                    self.event("Synced", message, warning=True, severity=self.alert_for(failing))
                    status.message = message
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
            verb = f"mirroring {step.mirror}% of traffic to canary" if step.mirror else "mirroring stopped"
            self.event("Synced", f"Advance {self.ref}: {verb}")
            self.advance()
        elif step.kind is StepKind.CONFIRM_PROMOTION:
            self.confirm_promotion(self.promotion_approved)
        elif step.kind is StepKind.PAUSE:
            self.pause(step)
        else:
            self.analyse(step)

    def promotion_approved(self) -> None:
        """Blue/green past its gate: the switch to the canary and one more check come next."""
        if self.status.phase is Phase.WAITING_PROMOTION:
            self.set_phase(Phase.PROGRESSING, "Promotion approved")
        self.event("Synced", f"Confirm-promotion passed, routing all traffic to canary {self.target}")
        self.advance()

    def pause(self, step: Step) -> None:
        if self.pending.take(CommandKind.PROMOTE):
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
        if self.pending.take(CommandKind.PROMOTE):
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
        # Flagger's order: the rollout hooks one by one (a failure ends the check), then the metrics.
        hooks = self.run_hooks(self.hooks_of(WebhookType.ROLLOUT, webhooks), stop_at=False)
        failing = next((hook for hook, result in hooks if not result.success), None)
        missing_metrics = tuple(
            MetricRequest(metric, caller_side) for metric in chosen if metric.name not in self.obs.metrics
        )
        if failing is None and missing_metrics:
            raise _NeedData(Need(metrics=missing_metrics))
        self.status.last_analysis_at = self.now
        self.requeue = min(self.requeue, self.interval)
        if failing is not None:
            self.failed_check(
                f"Halt advancement {self.ref}: rollout hook {failing.name} failed: "
                f"{self.obs.hooks[hook_key(failing)].message}",
                alert=not failing.mute_alert,
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

    def wait_or_fail(self, message: str, give_up: Callable[[str], None] | None = None) -> None:
        """Wait for readiness or data until the progress deadline, then ``give_up`` (roll back)."""
        if self.status.held_since is None:
            self.status.held_since = self.now
        held_for = seconds_since(self.status.held_since, self.obs.now) or 0.0
        deadline = self.spec.progress_deadline_seconds
        if held_for >= deadline:
            (give_up or self.rollback)(f"Progress deadline exceeded ({deadline}s): {message}")
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

    def confirm_promotion(self, approved: Callable[[], None]) -> None:
        # Keep judging the canary while a human decides, as Flagger does.
        waiting = self.status.phase is Phase.WAITING_PROMOTION
        if waiting and self.check_due() and self.check(None, None, caller_side=False) is not Verdict.PASS:
            return
        failing = self.gate(WebhookType.CONFIRM_PROMOTION)
        if failing is None:
            approved()
            return
        message = f"Halt advancement {self.ref} waiting for promotion approval {failing.name}"
        if not waiting:
            self.event("Synced", message, warning=True, severity=self.alert_for(failing))
        self.set_phase(Phase.WAITING_PROMOTION, message)
        self.requeue = min(self.requeue, self.interval)

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

    def primary_failed(self, message: str) -> bool:
        """During promotion the canary is the only healthy copy: wait for the primary, and at the deadline
        keep the canary serving (as Flagger does) instead of rolling back to the broken primary."""
        if self.obs.primary.ready:
            self.status.held_since = None
            return False
        self.wait_or_fail(
            f"primary of {self.target} not ready {message}: {self.obs.primary.message}", self.failed_promotion
        )
        return True

    def promoting(self) -> None:
        if self.primary_failed("after promotion"):
            return
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
        if self.primary_failed("with all traffic"):
            return
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_DOWN))
        self.status.last_promoted_spec = self.status.last_applied_spec
        self.status.current_step = len(self.steps)
        self.set_phase(Phase.SUCCEEDED, "Canary analysis completed successfully, promotion finished")
        self.event("Synced", f"Promotion completed! Scaling down {self.target}", severity=Severity.INFO)
        self.post_rollout()
        self.requeue = self.interval

    def failed_promotion(self, reason: str) -> None:
        """All traffic to the canary, which keeps running; phase Failed. The primary now runs a spec that
        never became ready, so no revision counts as promoted: the next one gets a full rollout."""
        self.reset_routes()
        self.status.canary_weight = 100
        self.status.last_promoted_spec = None
        self.fail(reason, f"Promotion of {self.target} failed, all traffic stays on the canary: {reason}")

    # --- rollback ---------------------------------------------------------------------------------------

    def rollback(self, reason: str) -> None:
        self.reset_routes()
        self.actions.append(Workload(WorkloadOp.SCALE_CANARY_DOWN))
        self.event("Synced", reason, warning=True)
        self.fail(reason, f"Canary failed! Scaling down {self.target}: {reason}")

    def fail(self, reason: str, alert: str) -> None:
        self.status.held_since = None
        self.set_phase(Phase.FAILED, reason)
        self.event("Synced", alert, warning=True, severity=Severity.ERROR)
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


# kstatus (sigs.k8s.io/cli-utils) and Flux read these: Reconciling while a rollout is under way, Stalled
# once it failed, each present only while True; Ready is True only when neither is. Promoted is Flagger's.
READY, RECONCILING, STALLED, PROMOTED = "Ready", "Reconciling", "Stalled", "Promoted"
DONE_PHASES = (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.TERMINATED)


def fast_fail_reason(status: CanaryStatus) -> str | None:
    """Why fastFail rolled the canary back, when it did: failed checks were not the cause."""
    failed = status.phase is Phase.FAILED and status.message.startswith(f"{FAST_FAIL}:")
    return status.message if failed else None


def condition_states(status: CanaryStatus) -> dict[str, tuple[ConditionStatus, str]]:
    """Each condition type with its status and reason for the Canary's phase."""
    phase = status.phase
    reason = phase.value if phase is not None else "Pending"
    if phase in DONE_PHASES:
        promoted = ConditionStatus.TRUE if phase is not Phase.TERMINATED else ConditionStatus.UNKNOWN
        return {PROMOTED: (promoted, reason), READY: (ConditionStatus.TRUE, reason)}
    if phase is Phase.FAILED:
        failed = (ConditionStatus.FALSE, reason)
        return {PROMOTED: failed, READY: failed, STALLED: (ConditionStatus.TRUE, reason)}
    if status.paused and phase in ANALYSIS_PHASES:
        reason = "Paused"
    return {
        PROMOTED: (ConditionStatus.UNKNOWN, reason),
        READY: (ConditionStatus.FALSE, reason),
        RECONCILING: (ConditionStatus.TRUE, reason),
    }


def _conditions(status: CanaryStatus, now: str) -> list[Condition]:
    previous = {c.type: c for c in status.conditions}
    result = []
    for kind, (state, reason) in condition_states(status).items():
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
