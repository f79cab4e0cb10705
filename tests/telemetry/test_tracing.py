"""Tracer with the SDK's in-memory exporter: one trace per rollout, nesting and attributes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from canaryctl.api.models import Canary
from canaryctl.telemetry import Tracer, processors_from_env
from canaryctl.telemetry.tracing import rollout_ids

CANARY = Canary.model_validate(
    {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 80}},
        "status": {"phase": "Succeeded", "canaryWeight": 0},
    }
)


def traced() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracer([SimpleSpanProcessor(exporter)]), exporter


def reconcile(tracer: Tracer, revision: str, weight: int) -> None:
    with tracer.rollout(CANARY, revision, phase="Progressing"):
        with (
            tracer.span("step", step="setWeight", weight=weight),
            tracer.span("router", router="canaryctl", weight=weight),
        ):
            pass
        with tracer.span("metric", metric="request-success-rate") as metric:
            metric.set(value=99.9, verdict="pass")
        with tracer.span("webhook", webhook="load-test", type="rollout") as hook:
            hook.set(verdict="fail")
            hook.fail("HTTP 500")


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_one_trace_per_rollout_across_reconciles() -> None:
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    reconcile(tracer, "rev-1", 20)
    tracer.finish_rollout(CANARY, "rev-1", "promoted", started_at=datetime(2026, 1, 1, tzinfo=UTC))
    spans = exporter.get_finished_spans()
    trace_id, root_id = rollout_ids(CANARY, "rev-1")
    assert {span.context.trace_id for span in spans} == {trace_id}

    (root,) = by_name(spans, "rollout")
    assert root.parent is None and root.context.span_id == root_id
    assert root.start_time == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e9)
    assert root.attributes is not None and root.attributes["canaryctl.verdict"] == "promoted"

    reconciles = by_name(spans, "reconcile")
    assert len(reconciles) == 2
    for span in reconciles:
        assert span.parent is not None and span.parent.span_id == root_id
        assert span.attributes is not None and span.attributes["canaryctl.phase"] == "Progressing"
    step, router = by_name(spans, "step")[1], by_name(spans, "router")[1]
    assert step.parent is not None and step.parent.span_id == reconciles[1].context.span_id
    assert router.parent is not None and router.parent.span_id == step.context.span_id
    assert router.attributes == {
        "canaryctl.canary": "podinfo",
        "canaryctl.namespace": "test",
        "canaryctl.revision": "rev-1",
        "canaryctl.router": "canaryctl",
        "canaryctl.weight": 20,
    }
    metric = by_name(spans, "metric")[0]
    assert metric.attributes is not None
    assert (metric.attributes["canaryctl.value"], metric.attributes["canaryctl.verdict"]) == (99.9, "pass")
    webhook = by_name(spans, "webhook")[0]
    assert webhook.status.status_code is StatusCode.ERROR and webhook.status.description == "HTTP 500"


def test_a_new_revision_is_a_new_trace_and_the_root_defaults_to_first_seen() -> None:
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    reconcile(tracer, "rev-2", 10)
    tracer.finish_rollout(CANARY, "rev-2", "rolled-back")
    spans = exporter.get_finished_spans()
    assert len({span.context.trace_id for span in spans}) == 2
    (root,) = by_name(spans, "rollout")
    first_rev2 = next(s for s in by_name(spans, "reconcile") if s.context.trace_id == root.context.trace_id)
    assert root.start_time is not None and first_rev2.start_time is not None
    assert root.start_time <= first_rev2.start_time


def test_exceptions_mark_the_span_failed() -> None:
    tracer, exporter = traced()
    with pytest.raises(RuntimeError), tracer.rollout(CANARY, "rev"), tracer.span("router"):
        raise RuntimeError("apply failed")
    router, tick = exporter.get_finished_spans()
    assert router.status.status_code is StatusCode.ERROR
    assert tick.status.status_code is StatusCode.ERROR


def test_spans_outside_a_rollout_carry_only_their_own_attributes() -> None:
    tracer, exporter = traced()
    with tracer.span("router", router="istio", weight=None):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.attributes == {"canaryctl.router": "istio"}


def test_exporters_from_otel_variables(caplog: pytest.LogCaptureFixture) -> None:
    assert processors_from_env({}) == []
    assert processors_from_env({"OTEL_TRACES_EXPORTER": "none"}) == []
    processors = processors_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert [type(p) for p in processors] == [BatchSpanProcessor]
    assert isinstance(getattr(processors[0], "span_exporter", None), ConsoleSpanExporter)
    Tracer(processors).shutdown()
    assert processors_from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []
    with caplog.at_level(logging.WARNING):
        # The OTLP exporter packages are optional and not installed here.
        assert processors_from_env({"OTEL_TRACES_EXPORTER": "otlp"}) == []
        assert processors_from_env({"OTEL_TRACES_EXPORTER": "zipkin"}) == []
    assert "needs the opentelemetry-exporter-otlp-proto-http package" in caplog.text
    assert "'zipkin' is not supported" in caplog.text
