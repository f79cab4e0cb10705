"""Values that cross the engine boundary: what the runner observed, and what the engine wants done.

All frozen dataclasses, so a decision can be compared, logged and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from canaryctl.api.control import CommandKind
from canaryctl.api.models import (
    CanaryMetric,
    CanaryStatus,
    CanaryWebhook,
    FaultStatus,
    HTTPMatchRequest,
    Severity,
    WebhookType,
)


@dataclass(frozen=True)
class RouteState:
    """The whole desired routing for one canary; routers apply it idempotently."""

    canary_weight: int = 0
    mirror_weight: int = 0
    match: tuple[HTTPMatchRequest, ...] = ()
    fault: FaultStatus | None = None

    @property
    def primary_weight(self) -> int:
        return 100 - self.canary_weight


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str = ""


@dataclass(frozen=True)
class MetricSample:
    """One measured value. ``value`` None means the query returned no data.

    ``requests``/``errors`` are the sample counts behind a rate when the provider knows them; the
    comparison uses them for a two-proportion test so low traffic neither fails nor passes a canary.
    """

    value: float | None
    requests: float | None = None
    errors: float | None = None


@dataclass(frozen=True)
class MetricObservation:
    name: str
    canary: MetricSample
    primary: MetricSample | None = None
    error: str | None = None
    provider: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class ErrorSample:
    """Canary requests and errors over the last fastFail period."""

    requests: float
    errors: float


@dataclass(frozen=True)
class HookResult:
    name: str
    type: WebhookType
    success: bool
    status_code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class Command:
    """A manual control request; ``id`` makes it idempotent across ticks and restarts."""

    kind: CommandKind
    id: str


@dataclass(frozen=True)
class Observations:
    now: datetime
    revision: str | None = None
    tracked_configs: dict[str, str] | None = None
    primary: Readiness = Readiness(True)
    canary: Readiness = Readiness(True)
    metrics: dict[str, MetricObservation] = field(default_factory=dict)
    hooks: dict[str, HookResult] = field(default_factory=dict)
    error_sample: ErrorSample | None = None
    error_sample_measured: bool = False
    command: Command | None = None
    router_error: str | None = None


@dataclass(frozen=True)
class MetricRequest:
    """A metric the runner must measure this tick. ``caller_side`` is set during fault steps, where
    upstream stats cannot see injected faults."""

    metric: CanaryMetric
    caller_side: bool = False


@dataclass(frozen=True)
class Plan:
    """What the runner must gather before calling the engine for this tick."""

    metrics: tuple[MetricRequest, ...] = ()
    hooks: tuple[CanaryWebhook, ...] = ()
    error_sample: bool = False


# --- actions ---------------------------------------------------------------------------------------


class WorkloadOp(StrEnum):
    INITIALIZE = "initialize"  # create the primary workload and the apex/primary/canary services
    SCALE_CANARY_UP = "scale-canary-up"
    SCALE_CANARY_DOWN = "scale-canary-down"
    PROMOTE = "promote"  # copy the canary's template (and configs) to the primary
    REVERT = "revert"  # on deletion with revertOnDeletion: give the target its traffic back


@dataclass(frozen=True)
class SetRoutes:
    routes: RouteState


@dataclass(frozen=True)
class Workload:
    op: WorkloadOp


@dataclass(frozen=True)
class Event:
    """A Kubernetes event and, where severity is set, an alert for the notifiers."""

    reason: str
    message: str
    warning: bool = False
    severity: Severity | None = None


@dataclass(frozen=True)
class CallHooks:
    """Fire-and-record hooks whose result does not steer the rollout (post-rollout)."""

    hooks: tuple[CanaryWebhook, ...]


Action = SetRoutes | Workload | Event | CallHooks


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus
    actions: tuple[Action, ...]
    requeue_after: float
