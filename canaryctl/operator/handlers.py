"""The kopf operator: one daemon per Canary drives the engine through the runner.

Each daemon iteration takes the Canary as last seen (kopf's watch events, or the answer to the last
status write), ticks once (observe, decide, act) and stores the decision's status with a merge patch of
``.status`` only when it changed, then sleeps until the decision's ``requeue_after`` or until the spec or
the ``canaryctl.dev/command`` annotation changes. The status patch carries the resourceVersion the tick
read: on a 409 Conflict the Canary is read again and the patch repeated only if nobody else changed its
status meanwhile (else the tick is retried from the newer status, never written over it).

Everything durable is in that status, so a restarted (or newly elected) operator continues at the same
step. A Canary that fails validation or asks for routing its router cannot express gets an
``InvalidSpec`` condition and nothing else: its traffic is not touched. Errors stay inside their
Canary's daemon; other Canaries keep progressing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from canaryctl import registry
from canaryctl.api.control import COMMAND_ANNOTATION, decode_command
from canaryctl.api.models import (
    GROUP,
    INCLUDED_MESH,
    MIN_INTERVAL_CONTEXT,
    VERSION,
    AlertProvider,
    Canary,
    Condition,
    ConditionStatus,
    ObjectMeta,
    Phase,
)
from canaryctl.engine import StepKind, compile_steps, route_of
from canaryctl.engine.clock import to_rfc3339
from canaryctl.engine.machine import READY, RECONCILING, STALLED
from canaryctl.engine.types import Command, Decision, RouteState, SetRoutes, WorkloadOp
from canaryctl.operator.adapters import Catalog, KubeEvents, OperatorObjects, cross_namespace_reference
from canaryctl.operator.cache import WatchCache, shared_strings
from canaryctl.operator.patching import merge_patch
from canaryctl.operator.workloads import KubeWorkloads, TargetNotReady
from canaryctl.ports import Notifier
from canaryctl.runner import COMMIT_GRACE_SECONDS, ActionFailed, Ports, tick
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl.telemetry.tracing import Tracer
from canaryctl_mesh.duration import parse_duration
from canaryctl_mesh.kube import FIELD_MANAGER, KUBE_REQUEST_TIMEOUT_SECONDS, RequestTally, current_tally
from canaryctl_mesh.meshd.runtime import tune_collector
from canaryctl_mesh.meshd.watch import older
from canaryctl_providers.metrics.analyzer import DEFAULT_PROMETHEUS, MetricsAnalyzer
from canaryctl_providers.metrics.kubeapi import ClusterApi
from canaryctl_providers.notifiers.routing import AlertRouter
from canaryctl_providers.outbound import HOOKS_PER_CANARY, QUERIES_PER_CANARY, close_shared_clients
from canaryctl_providers.routers import spec_problem, unsupported_steps
from canaryctl_providers.webhooks import WebhookClient

log = logging.getLogger(__name__)

FINALIZER = "canaryctl.dev/finalizer"
INVALID_SPEC = "InvalidSpec"
# True while the Canary's ticks fail (e.g. Forbidden in its namespace); its next good tick drops it.
RECONCILE_ERROR = "ReconcileError"
# Seconds a replica's peering record lives unless renewed: how soon a standby replaces a dead one.
PEERING_LIFETIME_SECONDS = 60
RETRY_SECONDS = 5.0  # at most, after an error: the status was not stored, try the same tick again
MAX_RETRY_AFTER_SECONDS = 60.0  # a throttling API server's Retry-After is obeyed up to this
REVERT_RETRY_SECONDS = 10.0  # at most, between checks that a reverted target's pods are ready
INVALID_RECHECK_SECONDS = 60.0  # an invalid spec is re-read at once when it changes; this is a backstop
MIN_REQUEUE_SECONDS = 0.01  # the engine asks for 0 s after a step; keep one yield between ticks
LAG_SAMPLES = 10_000
# First ticks in flight at once: after a restart or failover every Canary's daemon starts together, and
# their reads, status writes, metric queries and webhook calls then queue here, not at the API server.
MAX_CONCURRENT_TICKS = 50
# A daemon's first tick waits a random part of min(its interval, this): resumed Canaries spread out.
START_JITTER_SECONDS = 10.0
DAEMON_STOP_SECONDS = 30.0  # kopf's wait for a cancelled daemon; more than a tick's commit grace
DEFAULT_INTERVAL_SECONDS = 60.0  # Flagger's default analysis interval
ROUTER_FIELD_MANAGER = "canaryctl-router"  # routers own only their own fields (e.g. the apex selector)
CONFLICT_ATTEMPTS = 3  # status writes answered 409 while only metadata or spec changed meanwhile
CANARY_API_VERSION = f"{GROUP}/{VERSION}"

Flag = asyncio.Event | threading.Event  # what kopf accepts as stop/ready flags


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    peering: str | None = "canaryctl"  # None: standalone (no leader election)
    priority: int = field(default_factory=lambda: random.randint(1, 2**31 - 1))  # distinct per replica
    peering_lifetime: int = PEERING_LIFETIME_SECONDS
    default_provider: str = INCLUDED_MESH
    prometheus_url: str = DEFAULT_PROMETHEUS
    cluster_name: str = "kubernetes"
    liveness: str | None = None  # kopf's liveness endpoint, e.g. http://0.0.0.0:8081/healthz
    # templateRef/providerRef/upstreamRef may name these besides the Canary's own; "*": any
    shared_namespaces: tuple[str, ...] = ()
    hook_concurrency: int = HOOKS_PER_CANARY  # webhook calls in flight per Canary
    query_concurrency: int = QUERIES_PER_CANARY  # metric queries in flight per Canary
    kube_request_timeout: float = KUBE_REQUEST_TIMEOUT_SECONDS  # client timeout of every API call
    default_notifier: Notifier | None = None  # for Canaries that list no alerts (Flagger's -slack-url)
    watch_cache: bool = True  # reads of workloads, Services and routes from watches (else GETs)
    max_concurrent_ticks: int = MAX_CONCURRENT_TICKS
    min_interval_seconds: float | None = None  # floor of analysis intervals; None: Flagger's 10 s
    start_jitter: float = START_JITTER_SECONDS  # seconds; 0: every daemon ticks at once when it starts
    # kopf cancels a stopping daemon, then leaves it running ("orphaned") after this many seconds
    daemon_stop_seconds: float = DAEMON_STOP_SECONDS


def invalid_status(
    status: Mapping[str, Any], message: str, now: str, generation: int | None
) -> dict[str, Any]:
    """The stored status with InvalidSpec, Stalled and Ready=False for ``generation`` (kstatus: Failed);
    phase and traffic untouched."""
    states = {INVALID_SPEC: ConditionStatus.TRUE, STALLED: ConditionStatus.TRUE, READY: ConditionStatus.FALSE}
    replaced = (*states, RECONCILING)
    conditions = [c for c in status.get("conditions") or [] if c.get("type") not in replaced]
    for kind, state in states.items():
        condition = Condition(
            type=kind, status=state, reason=INVALID_SPEC, message=message, last_transition_time=now
        )
        conditions.append(condition.to_wire())
    invalid = {"conditions": conditions, "message": f"{INVALID_SPEC}: {message}"}
    return {**status, **invalid, "observedGeneration": generation}


def alert_provider_status(body: Mapping[str, Any], now: str) -> dict[str, Any] | None:
    """The AlertProvider's status with a ``Ready`` condition saying whether a notifier can be built from
    its spec (its type registered, its fields valid); None when the stored one already says so, so that
    the write's own watch event changes nothing."""
    try:
        AlertProvider.model_validate({key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    except ValidationError as exc:
        state, reason, message = ConditionStatus.FALSE, INVALID_SPEC, describe(exc)
    else:
        state, reason, message = ConditionStatus.TRUE, "Valid", f"notifier type {body['spec']['type']!r}"
    old = body.get("status") or {}
    ready = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and (ready.get("status"), ready.get("reason"), ready.get("message")) == (
        state,
        reason,
        message,
    ):
        return None
    condition = Condition(
        type="Ready", status=state, reason=reason, message=message, last_transition_time=now
    )
    kept = [c for c in old.get("conditions") or [] if c.get("type") != "Ready"]
    return {**old, "conditions": [*kept, condition.to_wire()]}


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """kopf connects with the very credentials of the operator's own client (one login, one place);
    called again on a 401, which re-reads a rotated service-account token."""
    header = configuration.get_api_key_with_prefix("BearerToken") or ""
    scheme, _, token = header.rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme=scheme or None,
        token=token or None,
    )


def describe(error: ValidationError) -> str:
    """Each problem with the field path as written in the manifest, e.g. ``spec.analysis.stepWeight``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )


def api_error(exc: BaseException) -> ApiException | None:
    """The API server's answer behind a failure, when one is (an action wraps it)."""
    while exc is not None and not isinstance(exc, ApiException):
        exc = exc.__cause__  # type: ignore[assignment]
    return exc


def failure_message(exc: BaseException) -> str:
    """One line that stays the same while the failure does (an API answer's headers carry a date)."""
    text = f"{exc}" if isinstance(exc, ActionFailed) else f"{type(exc).__name__}: {exc}"
    answer = api_error(exc)
    if answer is None:
        return text
    try:
        said = str(json.loads(answer.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        said = ""
    return f"{text.splitlines()[0] if text else ''} {answer.reason}: {said}".strip()


def start_delay(body: Mapping[str, Any], most: float) -> float:
    """How long a starting daemon waits before its first tick: uniform in [0, min(interval, most)), so
    Canaries resumed together spread over their interval and none is late by more than one interval."""
    analysis = (body.get("spec") or {}).get("analysis") or {}
    try:
        interval = parse_duration(str(analysis.get("interval") or ""))
    except ValueError:
        interval = DEFAULT_INTERVAL_SECONDS
    return random.uniform(0.0, max(0.0, min(interval, most)))


def retry_delay(exc: BaseException, interval: float) -> float:
    """When to try a failed tick again: after the API server's Retry-After when it throttled, else
    within half an analysis interval (a Canary resumes within one interval of an outage's end)."""
    answer = api_error(exc)
    if answer is not None and answer.status == 429:
        try:
            return min(float((answer.headers or {}).get("Retry-After", "")), MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            pass
    return min(RETRY_SECONDS, interval / 2)


def error_status(status: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    """The stored status with a ReconcileError condition; phase, steps and traffic untouched."""
    kept = [c for c in status.get("conditions") or [] if c.get("type") != RECONCILE_ERROR]
    condition = Condition(
        type=RECONCILE_ERROR,
        status=ConditionStatus.TRUE,
        reason=reason,
        message=message,
        last_transition_time=now,
    )
    return {**status, "conditions": [*kept, condition.to_wire()]}


class StatusConflict(Exception):
    """Someone else changed a Canary's status between this tick's read and its write."""


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _reference(body: Mapping[str, Any]) -> Canary:
    """A Canary carrying only metadata, for events about objects whose spec does not validate."""
    return Canary.model_construct(metadata=ObjectMeta.model_validate(body["metadata"]))  # type: ignore[call-arg]


class CanaryOperator:
    """Holds the shared ports and per-canary wake-ups; ``registry()`` gives kopf its handlers."""

    def __init__(self, config: OperatorConfig, api: client.ApiClient, metrics: ControllerMetrics) -> None:
        self.config = config
        self.cache = WatchCache(api, config.namespaces) if config.watch_cache else None
        self.objects, self.router_objects = (
            OperatorObjects(api, manager, request_timeout=config.kube_request_timeout, cache=self.cache)
            for manager in (FIELD_MANAGER, ROUTER_FIELD_MANAGER)
        )
        self.metrics = metrics
        self.catalog = Catalog(self.objects)
        self.hooks = WebhookClient(
            observe=metrics.observe_webhook, concurrency=config.hook_concurrency, secrets=self.catalog.secret
        )
        self.analyzer = MetricsAnalyzer(
            templates=self.catalog.template,
            secrets=self.catalog.secret,
            default_address=config.prometheus_url,
            query_concurrency=config.query_concurrency,
            cluster=ClusterApi.from_configuration(api.configuration),
        )
        self.alerts = AlertRouter(self.catalog.notifier, config.default_notifier)
        self.events = KubeEvents(self.objects)
        self.workloads = KubeWorkloads(self.objects)
        self.tracer = Tracer()
        floor = config.min_interval_seconds
        self._validation = {MIN_INTERVAL_CONTEXT: floor} if floor is not None else None
        self.ticks = 0
        self.steps = 0  # ticks that changed the canary's weight, for the benchmark
        self.tick_lags: deque[float] = deque(maxlen=LAG_SAMPLES)  # seconds late, for the benchmark
        # Seconds from a tick's start to its status stored: the next one is due an interval after that.
        self.tick_seconds: deque[float] = deque(maxlen=LAG_SAMPLES)
        # When set (by a benchmark): each tick, whether it changed the weight, and the API requests it
        # and the reconcile it left running sent.
        self.tick_requests: list[tuple[bool, RequestTally]] | None = None
        self.first_ticks = 0  # first ticks in flight (each in a slot)
        self.peak_first_ticks = 0  # the most ever in flight at once, for tests
        self._tick_slots = asyncio.Semaphore(config.max_concurrent_ticks)
        self._wakes: dict[tuple[str, str], asyncio.Event] = {}
        self._seen: dict[tuple[str, str], tuple[Any, Any]] = {}
        # Each Canary as last seen: from kopf's watch events or the answer to a status write.
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._names: dict[str, set[str]] = {}  # namespace -> Canary names, for canary_total
        self._intervals: dict[tuple[str, str], float] = {}  # each Canary's analysis interval
        # Each Canary's reconcile of Services and routes, running while its daemon sleeps.
        self._converging: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._daemons: set[asyncio.Task[Any]] = set()  # the running ``follow`` tasks

    # --- one tick -----------------------------------------------------------------------------------------

    def ports(self, canary: Canary) -> Ports:
        router = registry.router(canary.spec.provider or self.config.default_provider, self.router_objects)
        return Ports(
            workloads=self.workloads,
            router=router,
            analyzer=self.analyzer,
            hooks=self.hooks,
            alerts=self.alerts,
            events=self.events,
            cluster=self.config.cluster_name,
            tracer=self.tracer,
        )

    def _remember(self, body: Mapping[str, Any], owned: bool = False) -> None:
        """Keep the newest version of a Canary seen (watch events may lag behind a write's answer).
        kopf's bodies are copied (strings shared); an ``owned`` one (an API answer only this operator holds)
        is kept as is."""
        key = _key(body)
        if not older(dict(body), self._bodies.get(key)):
            self._bodies[key] = dict(body) if owned else shared_strings(dict(body))

    async def _store(self, body: Mapping[str, Any], status: dict[str, Any]) -> Mapping[str, Any]:
        """Write the status if it changed, guarded by the resourceVersion read; returns the Canary as
        stored (``body`` itself when nothing changed)."""
        patch = merge_patch(body.get("status") or {}, status)
        if not patch:
            return body
        namespace, name = _key(body)
        current = body
        for _ in range(CONFLICT_ATTEMPTS):
            version = current["metadata"].get("resourceVersion")
            try:
                stored = await self.objects.patch_status("Canary", namespace, name, patch, version)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                fresh = await self.objects.get(CANARY_API_VERSION, "Canary", namespace, name)
                if fresh is None:
                    raise
                self._remember(fresh)
                if (fresh.get("status") or {}) != (body.get("status") or {}):
                    raise StatusConflict(
                        f"status of Canary {namespace}/{name} changed since it was read; ticking again"
                    ) from exc
                current = fresh
                continue
            self._remember(stored, owned=True)
            return stored
        raise StatusConflict(f"status of Canary {namespace}/{name}: 409 after {CONFLICT_ATTEMPTS} tries")

    async def _invalid(self, body: Mapping[str, Any], message: str) -> None:
        old = body.get("status") or {}
        reported = next((c for c in old.get("conditions") or [] if c.get("type") == INVALID_SPEC), None)
        generation = body["metadata"].get("generation")
        same = reported is not None and reported.get("message") == message
        if same and old.get("observedGeneration") == generation:
            return  # already reported; do not rewrite the transition time on every tick
        await self._store(body, invalid_status(old, message, to_rfc3339(datetime.now(UTC)), generation))
        await self.events.record(_reference(body), INVALID_SPEC, message, warning=True)

    async def reconcile(self, body: Mapping[str, Any]) -> float:
        """One tick for one Canary object; returns the seconds until the next one is due."""
        await self._converged(body)
        try:
            canary = Canary.model_validate(body, context=self._validation)
        except ValidationError as exc:
            await self._invalid(body, describe(exc))
            return INVALID_RECHECK_SECONDS
        if canary.spec.service_spec is None and not canary.spec.target_ref.knative:
            # Flagger's schema allows it; every router but Knative's generates Services from its port
            await self._invalid(body, "spec.service: not set; the router generates Services from its port")
            return INVALID_RECHECK_SECONDS
        interval = canary.spec.effective_analysis.interval_seconds
        self._intervals[_key(body)] = interval
        crossing = cross_namespace_reference(canary, self.config.shared_namespaces)
        if crossing is not None:
            await self._invalid(body, crossing)
            return interval
        try:
            ports = self.ports(canary)
        except ValueError as exc:
            await self._invalid(body, f"spec.provider: {exc}")
            return interval
        problem = spec_problem(canary, ports.router)
        if problem is not None:
            await self._invalid(body, problem)
            return interval
        problem = unsupported_steps(canary, ports.router)
        if problem is not None:
            await self._invalid(body, f"spec.analysis: {problem}")
            return interval
        decoded = decode_command((body["metadata"].get("annotations") or {}).get(COMMAND_ANNOTATION))
        command = Command(*decoded) if decoded is not None else None
        weight_before = canary.status.canary_weight if canary.status else None
        started = time.monotonic()

        async def store(decision: Decision) -> None:
            decision.status.observed_generation = body["metadata"].get("generation")
            await self._store(body, decision.status.to_wire())

        tally = RequestTally() if self.tick_requests is not None else None
        counting = current_tally.set(tally) if tally is not None else None
        try:
            decision = await tick(canary, ports, command=command, commit=store)
            updated = canary.model_copy(update={"status": decision.status})
            if decision.status.phase not in (None, Phase.INITIALIZING):
                key = (canary.metadata.namespace or "", canary.metadata.name or "")
                self._converging[key] = asyncio.create_task(self._converge(updated, ports, decision))
        finally:
            if counting is not None:
                current_tally.reset(counting)
        stepped = decision.status.canary_weight != weight_before
        self.ticks += 1
        self.steps += stepped
        if self.tick_requests is not None and tally is not None:
            self.tick_requests.append((stepped, tally))
        self.metrics.record_tick(canary, updated, time.monotonic() - started)
        return max(decision.requeue_after, MIN_REQUEUE_SECONDS)

    async def _converged(self, body: Mapping[str, Any], cancel: bool = False) -> None:
        """Wait for (or stop) the Canary's reconcile left running by its last tick: nothing of a new
        tick or of the finalizer may write while an older reconcile still does. Its failure is this
        tick's failure (reported, retried)."""
        meta = body["metadata"]
        pending = self._converging.pop((meta.get("namespace") or "", meta["name"]), None)
        if pending is None:
            return
        if not cancel:
            await pending
            return
        pending.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the Canary is going away; the next owner reconciles again
            log.warning("canary %s/%s: reconcile failed: %s", meta.get("namespace"), meta["name"], exc)

    async def _converge(self, canary: Canary, ports: Ports, decision: Decision) -> None:
        """Flagger re-applies the generated Services and routing objects every tick, so a spec.service
        edit or a deleted object is corrected without a new revision. Only drift is written: an idle
        tick costs reads. The routes are the stored ones, unless this tick's actions just set them.
        It runs while the daemon sleeps; the next tick waits for it before it acts."""
        router_selects = getattr(ports.router, "owns_apex_selector", False)
        services = self.workloads.reconcile(canary, apex_selector=not router_selects)
        if any(isinstance(action, SetRoutes) for action in decision.actions):
            await services
            return
        assert canary.status is not None
        match = next((s.match for s in compile_steps(canary.spec) if s.kind is StepKind.HEADER_ROUTE), ())
        await asyncio.gather(services, ports.router.apply(canary, route_of(canary.status, match)))

    # --- the daemon ---------------------------------------------------------------------------------------

    def observe_canary(self, body: Mapping[str, Any], event: str | None = None) -> None:
        """Keep the Canary as seen; wake its daemon early when its spec or command changed (not on its
        own status); keep the per-namespace count of Canaries (Flagger's canary_total)."""
        meta = body["metadata"]
        key = _key(body)
        names = self._names.setdefault(key[0], set())
        if event == "DELETED":
            names.discard(key[1])
            self._bodies.pop(key, None)
        else:
            names.add(key[1])
            self._remember(body)
        self.metrics.set_total(key[0], len(names))
        seen = (body.get("spec"), (meta.get("annotations") or {}).get(COMMAND_ANNOTATION))
        if self._seen.get(key, seen) != seen and key in self._wakes:
            self._wakes[key].set()
        self._seen[key] = seen

    async def follow(self, namespace: str, name: str, stopped: kopf.DaemonStopped) -> None:
        """Tick one Canary until kopf stops the daemon (deletion, pause by a peer, exit)."""
        key = (namespace, name)
        wake = self._wakes.setdefault(key, asyncio.Event())
        due: float | None = None
        last_error = ""
        daemon = asyncio.current_task()
        assert daemon is not None  # kopf runs every daemon in a task of its own
        self._daemons.add(daemon)
        try:
            known = self._bodies.get(key)
            if known is not None and self.config.start_jitter > 0:
                await self._sleep(stopped, wake, start_delay(known, self.config.start_jitter))
            while not stopped:
                # Only a daemon's first tick takes a slot: later ones may wait on a Canary's own slow
                # webhooks, and a slot held that long would hold other Canaries back.
                async with self._first_tick_slot() if due is None else contextlib.nullcontext():
                    if stopped:  # stopped while waiting for a slot
                        return
                    gone, delay, last_error = await self._tick_once(key, due, wake, last_error)
                if gone:
                    return
                due = time.monotonic() + delay
                await self._sleep(stopped, wake, delay)
        finally:
            self._daemons.discard(daemon)
            self._wakes.pop(key, None)
            await self._converged({"metadata": {"namespace": namespace, "name": name}}, cancel=True)
            self._seen.pop(key, None)
            self._bodies.pop(key, None)
            self._intervals.pop(key, None)

    async def _tick_once(
        self, key: tuple[str, str], due: float | None, wake: asyncio.Event, last_error: str
    ) -> tuple[bool, float, str]:
        """One tick: (whether the Canary is gone, seconds to the next one, the last error reported)."""
        started = time.monotonic()
        if due is not None and not wake.is_set():
            self.tick_lags.append(max(0.0, started - due))
        wake.clear()
        namespace, name = key
        body = self._bodies.get(key) or await self.objects.get(CANARY_API_VERSION, "Canary", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._gone(namespace, name, body)
            return True, 0.0, last_error
        try:
            delay = await self.reconcile(body)
            self.tick_seconds.append(time.monotonic() - started)
            return False, delay, ""
        except Exception as exc:  # one canary's failure must never stop the others
            delay = retry_delay(exc, self._intervals.get(key, RETRY_SECONDS))
            return False, delay, await self._report(body, exc, last_error)

    @contextlib.asynccontextmanager
    async def _first_tick_slot(self) -> AsyncIterator[None]:
        async with self._tick_slots:
            self.first_ticks += 1
            self.peak_first_ticks = max(self.peak_first_ticks, self.first_ticks)
            try:
                yield
            finally:
                self.first_ticks -= 1

    def _gone(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """A deleted Canary: its open rollout trace ends and, when its spec still reads, its gauges go
        (they are keyed by its target)."""
        self.tracer.abandon(_reference({"metadata": {"namespace": namespace, "name": name}}))
        try:
            self.metrics.forget(Canary.model_validate(body, context=self._validation))
        except ValidationError:
            return

    async def _report(self, body: Mapping[str, Any], exc: Exception, last: str) -> str:
        """Log every failure; when the message changes (no write or event storms), say so in the
        Canary's status (a ReconcileError condition, where its author looks: its namespace's Events may
        be what is refused) and in a Warning event. A lost race on the status itself is no error."""
        meta = body["metadata"]
        message = failure_message(exc)
        log.warning("canary %s/%s: tick failed: %s", meta["namespace"], meta["name"], message)
        target = ((body.get("spec") or {}).get("targetRef") or {}).get("name") or meta["name"]
        self.metrics.reconcile_error(str(target), meta["namespace"])
        if message == last or isinstance(exc, StatusConflict):
            return message
        answer = api_error(exc)
        if answer is not None and answer.status == 403:
            reason = "Forbidden"
        else:
            reason = "ActionFailed" if isinstance(exc, ActionFailed) else RECONCILE_ERROR
        reported = message
        now = to_rfc3339(datetime.now(UTC))
        try:
            await self._store(body, error_status(body.get("status") or {}, reason, message, now))
        except Exception as status_error:  # the API server itself may be what failed
            log.warning("condition not stored: %s", status_error)
            reported = ""  # try again after the next failure
        try:
            await self.events.record(_reference(body), reason, message, warning=True)
        except Exception as event_error:
            log.warning("event not recorded: %s", event_error)
        return reported

    @staticmethod
    async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- deletion -----------------------------------------------------------------------------------------

    async def finalize(self, body: Mapping[str, Any]) -> None:
        """revertOnDeletion: give the target its traffic back before the Canary (and what it owns) goes."""
        try:
            canary = Canary.model_validate(body, context=self._validation)
        except ValidationError:
            return  # never initialized from this spec: nothing of ours to revert
        if canary.status is None or canary.status.phase in (None, Phase.INITIALIZING):
            return
        await self._converged(body, cancel=True)
        if (body.get("status") or {}).get("phase") != Phase.TERMINATING.value:
            body = await self._store(body, {**(body.get("status") or {}), "phase": Phase.TERMINATING.value})
        ports = self.ports(canary)
        try:
            await self.workloads.apply(canary, WorkloadOp.REVERT)
        except TargetNotReady as exc:  # kopf calls the handler again; every step so far is idempotent
            interval = canary.spec.effective_analysis.interval_seconds
            raise kopf.TemporaryError(f"reverting: {exc}", delay=min(interval, REVERT_RETRY_SECONDS)) from exc
        await ports.router.apply(canary, RouteState(canary_weight=100))
        await self._store(body, {**(body.get("status") or {}), "phase": Phase.TERMINATED.value})
        await self.events.record(
            canary, "Terminated", f"Canary {canary.metadata.name} reverted to its target", False
        )
        self.tracer.abandon(canary)
        self.metrics.forget(canary)

    # --- kopf wiring --------------------------------------------------------------------------------------

    def settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # the engine writes the events users read
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.canaryctl.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.canaryctl.dev", key="last-handled-configuration"
        )
        settings.peering.standalone = self.config.peering is None
        settings.peering.name = self.config.peering or "canaryctl"
        settings.peering.mandatory = self.config.peering is not None
        settings.peering.priority = self.config.priority
        settings.peering.lifetime = self.config.peering_lifetime
        settings.peering.clusterwide = not self.config.namespaces
        # kopf's own API calls get the same client timeout; watch streams have its inactivity timeout.
        settings.networking.request_timeout = self.config.kube_request_timeout
        settings.watching.connect_timeout = self.config.kube_request_timeout
        return settings

    def registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        configuration = self.objects.api.configuration

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(configuration)

        stop_wait = self.config.daemon_stop_seconds

        @kopf.daemon(GROUP, VERSION, "canaries", registry=registry, cancellation_timeout=stop_wait)
        async def canary_daemon(
            namespace: str | None, name: str, stopped: kopf.DaemonStopped, **_: Any
        ) -> None:
            await self.follow(namespace or "", name, stopped)

        @kopf.on.cleanup(registry=registry)
        async def finish_ticks(**_: Any) -> None:
            await self._outlived_daemons()

        # Event handlers are coroutines: kopf runs a plain function in a worker thread, and that hop cost
        # more than the handler (about 5 % of the operator's CPU in rollouts, one per status write).
        @kopf.on.event(GROUP, VERSION, "canaries", registry=registry)
        async def canary_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
            self.observe_canary(body, type)

        def reverts(spec: kopf.Spec, **_: Any) -> bool:
            return bool(spec.get("revertOnDeletion"))

        @kopf.on.delete(GROUP, VERSION, "canaries", registry=registry, when=reverts)
        async def canary_deleted(body: kopf.Body, **_: Any) -> None:
            await self.finalize(body)

        kopf.on.event(GROUP, VERSION, "metrictemplates", registry=registry)(
            self._catalog_handler("MetricTemplate")
        )

        @kopf.on.event(GROUP, VERSION, "alertproviders", registry=registry)
        async def alert_provider_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
            self.catalog.observe("AlertProvider", type, dict(body))
            if type != "DELETED":
                await self.report_alert_provider(body)

        return registry

    async def report_alert_provider(self, body: Mapping[str, Any]) -> None:
        """A type no installed distribution registers (or a bad field) shows on the AlertProvider itself,
        where its author looks, instead of only in the log of a failed alert."""
        status = alert_provider_status(body, to_rfc3339(datetime.now(UTC)))
        if status is None:
            return
        meta = body["metadata"]
        try:
            await self.objects.patch_status(
                "AlertProvider", meta.get("namespace") or "", meta["name"], status
            )
        except Exception as exc:  # best effort: the API's or the transport's; the next event retries
            log.warning(
                "status of AlertProvider %s/%s not stored: %s", meta.get("namespace"), meta["name"], exc
            )

    def _catalog_handler(self, kind: str) -> Callable[..., Awaitable[None]]:
        async def catalog_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
            self.catalog.observe(kind, type, dict(body))

        return catalog_changed

    async def run(self, stop_flag: Flag | None = None, ready_flag: Flag | None = None) -> None:
        """Run kopf with these handlers until ``stop_flag`` is set (or a signal arrives)."""
        try:
            await kopf.operator(
                registry=self.registry(),
                settings=self.settings(),
                clusterwide=not self.config.namespaces,
                namespaces=self.config.namespaces,
                liveness_endpoint=self.config.liveness,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            await self._outlived_daemons()  # kopf ran ``finish_ticks`` unless it failed itself
            await self.hooks.aclose()
            await close_shared_clients()
            if self.cache is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.cache.stop)
            await asyncio.gather(self.objects.aclose(), self.router_objects.aclose())

    async def _outlived_daemons(self) -> None:
        """Wait for the ticks kopf gave up on: a daemon cancelled while it acts finishes its actions and
        status write (``COMMIT_GRACE_SECONDS``), and kopf leaves one still running after
        ``daemon_stop_seconds``, then cancels every task left once its cleanup handlers have run (5 s
        later), and the operator closes the clients and API threads a tick uses. Either way the status
        write would be lost and the next operator would repeat the step, so the wait is a cleanup handler."""
        running = {*self._daemons, *self._converging.values()}
        if not running:
            return
        log.info("waiting for %d Canary ticks to end", len(running))
        _, pending = await asyncio.wait(running, timeout=COMMIT_GRACE_SECONDS + DAEMON_STOP_SECONDS)
        if pending:
            log.warning("%d Canary ticks still running at exit", len(pending))


def tune_process() -> None:
    """The collector as the operator process runs it. With CPython's defaults, collections took 15 % of
    the operator's CPU during 500 rollouts, each full one (0.17 s) stopping every tick: each tick
    allocates thousands of short-lived objects (validated Canaries, requests, spans) that reference
    counting frees anyway. The youngest generation is collected after meshd's larger threshold, and
    what the process loaded before its first tick (kopf, the Kubernetes client, pydantic's schemas) is
    moved out of the collector's sight for good, so a full collection walks only what Canaries hold."""
    tune_collector()
    gc.freeze()


async def release_finalizers(
    objects: OperatorObjects, namespaces: tuple[str, ...], sweeps: int = 5, pause: float = 2.0
) -> list[str]:
    """Removes canaryctl's finalizer from every Canary in ``namespaces`` (all when empty).

    Run when the controller is uninstalled: a Canary deleted afterwards would otherwise stay Terminating,
    its finalizer never removed. A controller still shutting down may add it back, so the sweep repeats
    (``pause`` seconds apart, at most ``sweeps`` times) until one finds nothing left. Returns the
    ``namespace/name`` of each Canary released.
    """
    released: list[str] = []
    for sweep in range(sweeps):
        found = 0
        for namespace in namespaces or (None,):
            for body in await objects.list_objects(f"{GROUP}/{VERSION}", "Canary", namespace):
                meta = body["metadata"]
                finalizers = list(meta.get("finalizers") or [])
                if FINALIZER not in finalizers:
                    continue
                found += 1
                keep = [f for f in finalizers if f != FINALIZER]
                change = {"finalizers": keep, "resourceVersion": meta.get("resourceVersion")}
                try:
                    await objects.patch_metadata(
                        f"{GROUP}/{VERSION}", "Canary", meta["namespace"], meta["name"], change
                    )
                except client.ApiException as exc:
                    if exc.status not in (404, 409):  # gone, or changed since listed: the next sweep
                        raise
                    continue
                released.append(f"{meta['namespace']}/{meta['name']}")
        if not found:
            break
        if sweep + 1 < sweeps:
            await asyncio.sleep(pause)
    return released
