"""Tracer with the SDK's in-memory exporter (one trace per rollout, nesting and attributes) and the
OTLP/HTTP exporter against a loopback collector endpoint."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
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
        # The [otlp] extra brings the HTTP exporter only; gRPC's package is not installed.
        grpc = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        assert processors_from_env(grpc) == []
        assert processors_from_env({"OTEL_TRACES_EXPORTER": "zipkin"}) == []
    assert "needs the opentelemetry-exporter-otlp-proto-grpc package" in caplog.text
    assert "'zipkin' is not supported" in caplog.text


class OtlpReceiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector endpoint: decodes each protobuf export request it is sent."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            self.received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
        else:
            self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_otlp_export_reaches_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)  # read by the exporter itself
        tracer = Tracer(processors_from_env({"OTEL_TRACES_EXPORTER": "otlp"}))
        reconcile(tracer, "rev-1", 20)
        tracer.shutdown()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    spans = [
        span
        for request in OtlpReceiver.received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    reference, in_memory = traced()
    reconcile(reference, "rev-1", 20)
    assert sorted(span.name for span in spans) == sorted(s.name for s in in_memory.get_finished_spans())
    assert len({span.trace_id for span in spans}) == 1
    router = next(span for span in spans if span.name == "router")
    attributes = {a.key: a.value.string_value or a.value.int_value for a in router.attributes}
    assert attributes["canaryctl.router"] == "canaryctl" and attributes["canaryctl.weight"] == 20
    resource = OtlpReceiver.received[0].resource_spans[0].resource
    assert any(a.key == "service.name" and a.value.string_value == "canaryctl" for a in resource.attributes)
