"""OpenTelemetry tracing: one trace per rollout, however many reconciles and restarts it spans.

A rollout's trace and root span ids are derived from canary + revision, so every reconcile of that
revision (in this process or the next one) lands in the same trace, and the root span emitted when the
rollout finishes has exactly the id the reconcile spans already point to as their parent.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags

from canaryctl.api.models import Canary

log = logging.getLogger(__name__)

ATTRIBUTE_PREFIX = "canaryctl."
AttributeValue = str | bool | int | float
OTLP_EXPORTERS = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


def rollout_ids(canary: Canary, revision: str) -> tuple[int, int]:
    """The (trace id, root span id) of one rollout: stable across reconciles and controller restarts."""
    key = f"{canary.metadata.namespace}/{canary.metadata.name}@{revision}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


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


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    module_name = OTLP_EXPORTERS.get(protocol)
    if module_name is None:
        log.warning("OTLP protocol %r is not supported; use grpc or http/protobuf", protocol)
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        log.warning("OTEL_TRACES_EXPORTER=otlp needs the %s package; traces are not exported", package)
        return None
    exporter: SpanExporter = module.OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    return exporter


def processors_from_env(environ: Mapping[str, str] = os.environ) -> list[SpanProcessor]:
    """Span processors for OTEL_TRACES_EXPORTER (console, otlp, none; comma-separated).

    Unlike the OpenTelemetry default (otlp), nothing is exported until the variable is set, so a
    controller without a collector does not log export errors forever.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    processors: list[SpanProcessor] = []
    for name in (n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "none").split(",")):
        exporter: SpanExporter | None = None
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter(environ)
        elif name not in ("none", ""):
            log.warning("OTEL_TRACES_EXPORTER %r is not supported; use console, otlp or none", name)
        if exporter is not None:
            processors.append(BatchSpanProcessor(exporter))
    return processors


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


_current: ContextVar[dict[str, AttributeValue] | None] = ContextVar("canaryctl_rollout", default=None)


class Tracer:
    """Wraps an OpenTelemetry TracerProvider of its own (not the global one), configured from OTEL_*."""

    def __init__(self, processors: Sequence[SpanProcessor] | None = None) -> None:
        self._ids = _RolloutIds()
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "canaryctl")})
        self.provider = TracerProvider(resource=resource, id_generator=self._ids)
        for processor in processors if processors is not None else processors_from_env():
            self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("canaryctl")
        self._first_seen: dict[tuple[int, int], int] = {}

    @contextmanager
    def rollout(
        self, canary: Canary, revision: str, **attributes: AttributeValue | None
    ) -> Iterator[StepSpan]:
        """One reconcile of a rollout: a ``reconcile`` span under the rollout's root, made current so
        ``span()`` calls nest under it and inherit the canary and namespace attributes."""
        ids = rollout_ids(canary, revision)
        self._first_seen.setdefault(ids, time.time_ns())
        common = _attributes(
            {"canary": canary.metadata.name, "namespace": canary.metadata.namespace, "revision": revision}
        )
        root = SpanContext(ids[0], ids[1], is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        parent = trace.set_span_in_context(NonRecordingSpan(root), Context())
        token = _current.set(common)
        try:
            with self._tracer.start_as_current_span(
                "reconcile", context=parent, attributes={**common, **_attributes(attributes)}
            ) as span:
                yield StepSpan(span)
        finally:
            _current.reset(token)

    @contextmanager
    def span(self, name: str, **attributes: AttributeValue | None) -> Iterator[StepSpan]:
        """A child span for a step, metric check, webhook or router call; exceptions mark it failed."""
        merged = {**(_current.get() or {}), **_attributes(attributes)}
        with self._tracer.start_as_current_span(name, attributes=merged) as span:
            yield StepSpan(span)

    def finish_rollout(
        self, canary: Canary, revision: str, verdict: str, started_at: datetime | None = None
    ) -> None:
        """Emits the rollout's root span (``rollout``) once it is promoted or rolled back.

        It starts at ``started_at`` or, failing that, at the first reconcile this process traced.
        """
        ids = rollout_ids(canary, revision)
        first_seen = self._first_seen.pop(ids, time.time_ns())
        start = int(started_at.timestamp() * 1e9) if started_at is not None else first_seen
        attributes = _attributes(
            {
                "canary": canary.metadata.name,
                "namespace": canary.metadata.namespace,
                "revision": revision,
                "verdict": verdict,
                "weight": canary.status.canary_weight if canary.status else None,
            }
        )
        token = self._ids.fixed.set(ids)
        try:
            span = self._tracer.start_span(
                "rollout", context=Context(), attributes=attributes, start_time=start
            )
        finally:
            self._ids.fixed.reset(token)
        span.end()

    def shutdown(self) -> None:
        """Flushes and stops the exporters."""
        self.provider.shutdown()
