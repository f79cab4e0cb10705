"""OpenTelemetry tracing: exactly one trace per rollout (a canary and one revision).

Which revision a tick works on is known once the target was observed (``rollout_revision``): the tick
that detects a new revision already belongs to the new rollout, and a tick with nothing to do (a
finished or suspended canary, the same revision) records no span at all. A rollout's trace and root span
ids are derived from canary + revision, so every reconcile of that revision (in this process or the next
one) lands in the same trace, and the ``rollout`` root span emitted when the rollout ends (promoted,
rolled back, initialized, superseded by a newer revision, deleted) has exactly the id its reconcile spans
already point to as their parent.

Configuration is the SDK's own: the exporters named by ``OTEL_TRACES_EXPORTER`` are found through the
SDK's entry points, the sampler (``OTEL_TRACES_SAMPLER``), resource (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``), batching (``OTEL_BSP_*``), ``OTEL_SDK_DISABLED`` and each exporter's
``OTEL_EXPORTER_*`` are read by the SDK and the exporters themselves. Outbound httpx requests carry the
W3C ``traceparent`` of the span that makes them (``OTEL_PROPAGATORS``), through the OpenTelemetry httpx
instrumentation.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk._configuration import _get_exporter_names, _import_exporters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    NoOpTracerProvider,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
)

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Canary, CanaryStatus, ObjectMeta, Phase
from canaryctl.engine.types import Command
from canaryctl.telemetry.logs import log_context

log = logging.getLogger(__name__)

ATTRIBUTE_PREFIX = "canaryctl."
SERVICE = "canaryctl"
AttributeValue = str | bool | int | float
# Where a tick leaves the canary at rest: the rollout it worked on has ended.
AT_REST = (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED)
SUPERSEDED, DELETED = "Superseded", "Deleted"


def rollout_ids(canary: Canary, revision: str) -> tuple[int, int]:
    """The (trace id, root span id) of one rollout: stable across reconciles and controller restarts."""
    key = f"{canary.metadata.namespace}/{canary.metadata.name}@{revision}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def _named(canary: Canary) -> Canary:
    """The Canary by name alone, which is all a rollout's root span needs: a rollout stays open for as
    long as it runs, and with the whole validated Canary each held, 1,000 Canaries in a rollout kept
    about 20 MB."""
    meta = canary.metadata
    return Canary.model_construct(metadata=ObjectMeta(name=meta.name, namespace=meta.namespace))  # type: ignore[call-arg]


def rollout_revision(canary: Canary, observed: str | None, command: Command | None = None) -> str | None:
    """The revision a tick works on, or None when it has nothing to do (and so records no span).

    As the engine decides: before and during initialization the target's revision; while analysing the
    target's revision (a new one restarts the rollout); while promoting the applied one; at rest (or
    Waiting) a revision other than the applied one starts a rollout, and a retry restarts a failed one.
    """
    status = canary.status or CanaryStatus()
    phase, applied = status.phase, status.last_applied_spec
    if canary.spec.suspend or phase in (Phase.TERMINATING, Phase.TERMINATED):
        return None
    if phase in (None, Phase.INITIALIZING, Phase.PROGRESSING, Phase.WAITING_PROMOTION):
        return observed or applied
    if phase in (Phase.PROMOTING, Phase.FINALISING):
        return applied
    if observed is not None and observed != applied:
        return observed
    retry = command is not None and command.kind is CommandKind.RETRY and phase is Phase.FAILED
    if retry and command is not None and command.id != status.last_handled_command:
        return applied
    return None


class _RolloutIds(IdGenerator):
    """Random ids, except while a rollout's root span is being created."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self.fixed: ContextVar[tuple[int, int] | None] = ContextVar("canaryctl_rollout_ids", default=None)

    def generate_trace_id(self) -> int:
        fixed = self.fixed.get()
        return fixed[0] if fixed else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        fixed = self.fixed.get()
        return fixed[1] if fixed else self._random.generate_span_id()


def processors_from_env() -> list[SpanProcessor]:
    """A BatchSpanProcessor (OTEL_BSP_*) per exporter in OTEL_TRACES_EXPORTER, found by the SDK.

    Unset (or ``none``) exports nothing, so a controller without a collector logs no export errors.
    An exporter whose package is missing is reported once and nothing is exported.
    """
    try:
        exporters, _, _ = _import_exporters(_get_exporter_names("traces"), [], [])
    except (RuntimeError, ImportError) as exc:
        log.warning(
            "OTEL_TRACES_EXPORTER: %s; traces are not exported (the [otlp] extra installs otlp_json_http)",
            exc,
        )
        return []
    return [BatchSpanProcessor(exporter()) for exporter in exporters.values()]


def resource_from_env() -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), named canaryctl unless set."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: SERVICE}))
    return detected


def propagate_over_httpx() -> None:
    """Every httpx request made while a span is current carries that span's context (traceparent).

    The instrumentation patches httpx's transports once per process, so clients created anywhere (the
    webhook client, each metric provider's) are covered. Its tracer is a no-op one: a request adds no span
    of its own, it carries the webhook or metric span it is made in; outside any span it carries nothing.
    """
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=NoOpTracerProvider())


def _attributes(values: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {ATTRIBUTE_PREFIX + key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class StepSpan:
    """A span being recorded; ``set`` adds attributes learned during the call (e.g. the verdict)."""

    span: Span

    def set(self, **attributes: AttributeValue | None) -> None:
        self.span.set_attributes(_attributes(attributes))

    def fail(self, message: str) -> None:
        """Marks a call that returned a failure without raising (a failed webhook, a failing metric)."""
        self.span.set_status(Status(StatusCode.ERROR, message))


@dataclass
class TickTrace:
    """The trace scope of one tick; ``end`` closes the rollout when the tick left the canary at rest."""

    tracer: Tracer
    canary: Canary
    revision: str | None
    span: StepSpan

    def end(self, status: CanaryStatus) -> None:
        if self.revision is not None and status.phase in AT_REST:
            self.tracer.finish_rollout(self.canary, self.revision, status.phase.value, status.canary_weight)


@dataclass
class _Open:
    revision: str
    canary: Canary  # its name and namespace only (``_named``)
    started_ns: int = field(default_factory=time.time_ns)


_current: ContextVar[dict[str, AttributeValue] | None] = ContextVar("canaryctl_rollout", default=None)


class Tracer:
    """An OpenTelemetry TracerProvider of its own (not the global one), configured by the SDK from OTEL_*.

    Creating one also makes outbound httpx requests carry trace context (``propagate_over_httpx``).
    """

    def __init__(self, processors: Sequence[SpanProcessor] | None = None) -> None:
        self._ids = _RolloutIds()
        self.provider = TracerProvider(resource=resource_from_env(), id_generator=self._ids)
        exporting = list(processors if processors is not None else processors_from_env())
        for processor in exporting:
            self.provider.add_span_processor(processor)
        # With no exporter a recorded span goes nowhere, yet recording them was ~8 % of the operator's
        # CPU in a rollout tick: spans are then not recorded, and logs and outbound calls carry the
        # rollout's trace id (and its root span's id) all the same.
        self._tracer: trace.Tracer = (
            self.provider.get_tracer("canaryctl") if exporting else trace.NoOpTracer()
        )
        self._open: dict[tuple[str, str], _Open] = {}
        propagate_over_httpx()

    @staticmethod
    def _key(canary: Canary) -> tuple[str, str]:
        return canary.metadata.namespace or "", canary.metadata.name or ""

    @contextmanager
    def tick(self, canary: Canary, revision: str | None) -> Iterator[TickTrace]:
        """One reconcile: a ``reconcile`` span under the rollout's root, made current so ``span()`` calls
        nest under it and carry the canary's attributes. ``revision=None`` (nothing to do) records none.
        Log records written within carry the canary, namespace, phase and step."""
        status = canary.status or CanaryStatus()
        phase = status.phase.value if status.phase else None
        meta = canary.metadata
        with log_context(canary=meta.name, namespace=meta.namespace, phase=phase, step=status.current_step):
            if revision is None:
                yield TickTrace(self, canary, None, StepSpan(INVALID_SPAN))
                return
            self._begin(canary, revision)
            trace_id, root_id = rollout_ids(canary, revision)
            common = _attributes(
                {"canary": canary.metadata.name, "namespace": canary.metadata.namespace, "revision": revision}
            )
            root = SpanContext(trace_id, root_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            parent = trace.set_span_in_context(NonRecordingSpan(root), Context())
            token = _current.set(common)
            try:
                with self._tracer.start_as_current_span(
                    "reconcile", context=parent, attributes={**common, **_attributes({"phase": phase})}
                ) as span:
                    yield TickTrace(self, canary, revision, StepSpan(span))
            finally:
                _current.reset(token)

    def _begin(self, canary: Canary, revision: str) -> None:
        """Opens ``revision``'s rollout; an open one of another revision was superseded by it."""
        key = self._key(canary)
        current = self._open.get(key)
        if current is not None and current.revision != revision:
            self.finish_rollout(current.canary, current.revision, SUPERSEDED)
        if key not in self._open:
            self._open[key] = _Open(revision, _named(canary))

    @contextmanager
    def span(self, name: str, **attributes: AttributeValue | None) -> Iterator[StepSpan]:
        """A child span for a step, metric check, webhook or router call; exceptions mark it failed.
        Outside a rollout's tick nothing is recorded."""
        common = _current.get()
        if common is None:
            yield StepSpan(INVALID_SPAN)
            return
        merged = {**common, **_attributes(attributes)}
        with self._tracer.start_as_current_span(name, attributes=merged) as span:
            yield StepSpan(span)

    def abandon(self, canary: Canary) -> None:
        """The canary is gone: its open rollout (if any) ends as Deleted."""
        current = self._open.get(self._key(canary))
        if current is not None:
            self.finish_rollout(current.canary, current.revision, DELETED)

    def finish_rollout(self, canary: Canary, revision: str, verdict: str, weight: int | None = None) -> None:
        """Emits the rollout's root span (``rollout``), from its first reconcile seen by this process."""
        key = self._key(canary)
        opened = self._open.get(key)
        started = time.time_ns()
        if opened is not None and opened.revision == revision:
            started = self._open.pop(key).started_ns
        attributes = _attributes(
            {
                "canary": canary.metadata.name,
                "namespace": canary.metadata.namespace,
                "revision": revision,
                "verdict": verdict,
                "weight": weight,
            }
        )
        token = self._ids.fixed.set(rollout_ids(canary, revision))
        try:
            span = self._tracer.start_span(
                "rollout", context=Context(), attributes=attributes, start_time=started
            )
        finally:
            self._ids.fixed.reset(token)
        span.end()

    def shutdown(self) -> None:
        """Flushes and stops the exporters."""
        self.provider.shutdown()
