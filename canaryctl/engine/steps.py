"""Compile every way of describing a rollout into one step list.

Flagger's knobs (stepWeight, stepWeights, maxWeight, iterations, match, mirror) and explicit
``analysis.steps`` both become a tuple of ``Step``; the state machine only ever walks that tuple, so
canary, A/B, blue/green and custom rollouts share one code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from canaryctl.api.models import (
    CanaryAnalysis,
    CanaryMetric,
    CanarySpec,
    CanaryStep,
    CanaryWebhook,
    FaultStatus,
    HTTPMatchRequest,
    WebhookType,
)
from canaryctl_mesh.duration import parse_duration

DEFAULT_STEP_WEIGHT = 10
DEFAULT_MAX_WEIGHT = 100


class Strategy(StrEnum):
    CANARY = "canary"
    AB = "a/b testing"
    BLUE_GREEN = "blue/green"
    BLUE_GREEN_MIRROR = "blue/green mirroring"
    STEPS = "steps"


class StepKind(StrEnum):
    SET_WEIGHT = "setWeight"
    HEADER_ROUTE = "headerRoute"
    MIRROR = "mirror"  # without duration: mirroring stays on, the step completes at once
    PAUSE = "pause"
    ANALYSIS = "analysis"  # also timed mirror and fault steps: checks every interval while active
    # Blue/green: wait for confirm-promotion hooks while the primary still serves, before the switch.
    CONFIRM_PROMOTION = "confirmPromotion"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    weight: int = 0
    mirror: int = 0
    fault: FaultStatus | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    duration: float | None = None
    iterations: int = 1
    metrics: tuple[CanaryMetric, ...] | None = None
    webhooks: tuple[CanaryWebhook, ...] | None = None

    @property
    def instant(self) -> bool:
        return self.kind in (StepKind.SET_WEIGHT, StepKind.HEADER_ROUTE, StepKind.MIRROR)

    def describe(self) -> str:
        """One line for status messages and the plugin."""
        if self.kind is StepKind.SET_WEIGHT:
            return f"setWeight {self.weight}%"
        if self.kind is StepKind.HEADER_ROUTE:
            return "headerRoute (matching requests to canary)"
        if self.kind is StepKind.MIRROR:
            return f"mirror {self.mirror}%"
        if self.kind is StepKind.PAUSE:
            return f"pause {self.duration:g}s" if self.duration is not None else "pause (until promoted)"
        if self.kind is StepKind.CONFIRM_PROMOTION:
            return "confirm-promotion gate"
        if self.fault is not None:
            return f"fault on canary × {self.iterations} checks"
        if self.mirror:
            return f"mirror {self.mirror}% × {self.iterations} checks"
        return f"analysis × {self.iterations}"


@dataclass(frozen=True)
class Position:
    """The routing a step runs with."""

    canary_weight: int = 0
    mirror_weight: int = 0
    header_route: bool = False


def step_positions(steps: tuple[Step, ...]) -> list[Position]:
    """The routing each step runs with, then the routing after the last one. Follows the state machine:
    a timed mirror step switches mirroring on when it is entered and off when it is left."""
    weight, mirror, header = 0, 0, False
    positions = []
    for step in steps:
        if step.kind is StepKind.ANALYSIS and step.mirror:
            mirror = step.mirror
        positions.append(Position(weight, mirror, header))
        if step.kind is StepKind.SET_WEIGHT:
            weight = step.weight
        elif step.kind is StepKind.HEADER_ROUTE:
            header = True
        elif step.kind is StepKind.MIRROR:
            mirror = step.mirror
        elif step.kind is StepKind.ANALYSIS and step.mirror:
            mirror = 0
    positions.append(Position(weight, mirror, header))
    return positions


def strategy(analysis: CanaryAnalysis) -> Strategy:
    if analysis.steps:
        return Strategy.STEPS
    if analysis.iterations and analysis.match:
        return Strategy.AB
    if analysis.iterations:
        return Strategy.BLUE_GREEN_MIRROR if analysis.mirror else Strategy.BLUE_GREEN
    return Strategy.CANARY


def canary_weights(analysis: CanaryAnalysis) -> list[int]:
    """The weights a Flagger canary walks through: stepWeights as given, else stepWeight increments
    capped at maxWeight (the last step lands exactly on maxWeight)."""
    if analysis.step_weights:
        return list(analysis.step_weights)
    step = analysis.step_weight or DEFAULT_STEP_WEIGHT
    top = analysis.max_weight if analysis.max_weight is not None else DEFAULT_MAX_WEIGHT
    if step <= 0 or top <= 0:
        return []
    weights = list(range(step, top, step))
    return [*weights, top]


def _analysis(iterations: int = 1) -> Step:
    return Step(StepKind.ANALYSIS, iterations=max(1, iterations))


def _timed_iterations(duration: float | None, interval: float) -> int:
    """A timed step checks once per interval for its whole duration, at least once."""
    return max(1, math.ceil((duration or interval) / interval))


def _explicit(step: CanaryStep, interval: float) -> Step:
    if step.set_weight is not None:
        return Step(StepKind.SET_WEIGHT, weight=step.set_weight)
    if step.pause is not None:
        duration = parse_duration(step.pause.duration) if step.pause.duration else None
        return Step(StepKind.PAUSE, duration=duration)
    if step.analysis is not None:
        return Step(
            StepKind.ANALYSIS,
            iterations=step.analysis.iterations,
            metrics=tuple(step.analysis.metrics) if step.analysis.metrics is not None else None,
            webhooks=tuple(step.analysis.webhooks) if step.analysis.webhooks is not None else None,
        )
    if step.mirror is not None:
        if step.mirror.duration is None:
            return Step(StepKind.MIRROR, mirror=step.mirror.percentage)
        duration = parse_duration(step.mirror.duration)
        return Step(
            StepKind.ANALYSIS,
            mirror=step.mirror.percentage,
            duration=duration,
            iterations=_timed_iterations(duration, interval),
        )
    if step.fault is not None:
        duration = parse_duration(step.fault.duration)
        return Step(
            StepKind.ANALYSIS,
            fault=FaultStatus(delay=step.fault.delay, abort=step.fault.abort),
            duration=duration,
            iterations=_timed_iterations(duration, interval),
        )
    if step.header_route is not None:
        return Step(StepKind.HEADER_ROUTE, match=tuple(step.header_route.match))
    raise ValueError("empty step")  # unreachable: CanaryStep validates exactly one field


def compile_steps(spec: CanarySpec) -> tuple[Step, ...]:
    analysis = spec.effective_analysis
    kind = strategy(analysis)
    iterations = analysis.iterations or 1
    if kind is Strategy.STEPS:
        return tuple(_explicit(step, analysis.interval_seconds) for step in analysis.steps or [])
    if kind is Strategy.AB:
        return (Step(StepKind.HEADER_ROUTE, match=tuple(analysis.match or [])), _analysis(iterations))
    # Blue/green as Flagger runs it: the iterations against the idle canary, the promotion gate (when
    # there are confirm-promotion hooks) while the primary still serves, then the switch and one more
    # check with all traffic on the canary.
    gated = any(hook.type is WebhookType.CONFIRM_PROMOTION for hook in analysis.webhooks or [])
    gate = (Step(StepKind.CONFIRM_PROMOTION),) if gated else ()
    switch = (Step(StepKind.SET_WEIGHT, weight=100), _analysis())
    if kind is Strategy.BLUE_GREEN:
        return (_analysis(iterations), *gate, *switch)
    mirror = analysis.mirror_weight if analysis.mirror_weight is not None else 100
    if kind is Strategy.BLUE_GREEN_MIRROR:
        mirroring = (Step(StepKind.MIRROR, mirror=mirror), _analysis(iterations))
        return (*mirroring, *gate, Step(StepKind.MIRROR, mirror=0), *switch)
    steps: list[Step] = []
    if analysis.mirror:
        steps += [Step(StepKind.MIRROR, mirror=mirror), _analysis(), Step(StepKind.MIRROR, mirror=0)]
    for weight in canary_weights(analysis):
        steps += [Step(StepKind.SET_WEIGHT, weight=weight), _analysis()]
    return tuple(steps)
