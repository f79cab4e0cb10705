"""The small interfaces between the engine's runner and the outside world.

Each platform (Kubernetes, local) and each provider implements one of these; the runner only ever
talks to these Protocols, so the same rollout logic drives a cluster and a laptop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from canaryctl.api.models import Canary, CanaryMetric, CanaryWebhook, Phase, Severity
from canaryctl.engine.types import (
    ErrorSample,
    HookResult,
    MetricObservation,
    Readiness,
    RouteState,
    WorkloadOp,
)


@dataclass(frozen=True)
class Revision:
    """The canary's current revision: a hash of its pod template plus tracked config checksums."""

    hash: str
    tracked_configs: dict[str, str]


class Workloads(Protocol):
    """Primary/canary workloads of one platform (Deployments, DaemonSets, or local endpoints)."""

    async def revision(self, canary: Canary) -> Revision: ...

    async def readiness(self, canary: Canary, primary: bool) -> Readiness: ...

    async def apply(self, canary: Canary, op: WorkloadOp) -> None: ...


class Router(Protocol):
    """Turns a RouteState into the objects of one mesh or ingress."""

    name: str

    def unsupported(self, routes: RouteState) -> str | None:
        """Why this router cannot express ``routes`` (e.g. a fault on SMI), or None."""
        ...

    async def apply(self, canary: Canary, routes: RouteState) -> None: ...


class MetricsProvider(Protocol):
    """One metrics backend (Prometheus, Datadog, ...): runs a rendered query, None when no data."""

    async def query(self, query: str) -> float | None: ...

    async def is_online(self) -> bool: ...


class KubeApi(Protocol):
    """The controller's own access to the Kubernetes API, for metric providers that read metrics there
    (the external metrics API, Keptn). Answers are decoded JSON; a failed call raises, carrying the
    HTTP status. ``token`` sends that bearer token (a template's own) instead of the controller's
    credentials."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        token: str | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class MetricScope:
    """What a MetricTemplate's provider acts within: ``namespace`` is the template's own (its Secret
    was read there, and a provider on the controller's own API access reads nothing elsewhere);
    ``cluster`` is that access, None where there is no cluster (the local runtime)."""

    namespace: str | None = None
    cluster: KubeApi | None = None


class Analyzer(Protocol):
    """Resolves a Canary metric (builtin or template), renders and runs its queries."""

    async def measure(self, canary: Canary, metric: CanaryMetric, caller_side: bool) -> MetricObservation: ...

    async def error_sample(self, canary: Canary, period_seconds: float) -> ErrorSample | None: ...


@dataclass(frozen=True)
class Alert:
    """A notification about one canary, with enough detail to act on without a link."""

    canary: str
    namespace: str
    cluster: str
    phase: Phase | None
    severity: Severity
    message: str
    canary_weight: int
    failed_checks: int
    threshold: int
    failing_metric: str | None = None
    target: str | None = None


class Notifier(Protocol):
    async def post(self, alert: Alert) -> None: ...


class Hooks(Protocol):
    """Calls webhooks with Flagger's payload; never raises, failures are results."""

    async def call(
        self, canary: Canary, hook: CanaryWebhook, phase: Phase | None, checksum: str | None
    ) -> HookResult: ...

    async def event(
        self, canary: Canary, hook: CanaryWebhook, phase: Phase | None, message: str, warning: bool
    ) -> HookResult: ...


class Alerts(Protocol):
    """Delivers an alert to the providers a canary subscribes to (by severity); returns who got it."""

    async def send(self, canary: Canary, alert: Alert) -> list[str]: ...


class Events(Protocol):
    """Where a platform records what happened (Kubernetes events, the local console)."""

    async def record(self, canary: Canary, reason: str, message: str, warning: bool) -> None: ...


class Objects(Protocol):
    """Kubernetes objects by (apiVersion, kind, namespace, name): what routers and workloads write.

    ``apply`` creates or updates the object to match (server-side-apply semantics: fields it sets are
    owned by canaryctl, others are left alone).
    """

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...
