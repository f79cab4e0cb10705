"""Tracer with the SDK's in-memory exporter (one trace per rollout, nesting, attributes, what a tick
records), exporters chosen by the SDK from OTEL_* variables, and OTLP/HTTP export to a loopback
collector endpoint from a process in which ``opentelemetry.proto`` cannot even be imported."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Canary, CanaryStatus
from canaryctl.engine.types import Command
from canaryctl.telemetry import Tracer, processors_from_env
from canaryctl.telemetry.tracing import rollout_ids, rollout_revision

REPO = Path(__file__).resolve().parents[2]


def canary(phase: str | None = "Progressing", applied: str | None = "rev-1", **spec: Any) -> Canary:
    status = {"phase": phase, "lastAppliedSpec": applied, "lastHandledCommand": "old"} if phase else None
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 80}, **spec},
            "status": status,
        }
    )


def traced() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracer([SimpleSpanProcessor(exporter)]), exporter


def reconcile(tracer: Tracer, revision: str, weight: int, ends_in: str = "Progressing") -> None:
    with tracer.tick(canary(), revision) as tick:
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
        tick.end(CanaryStatus.model_validate({"phase": ends_in, "canaryWeight": weight}))


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_one_trace_per_rollout_closed_when_it_ends() -> None:
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    assert not by_name(exporter.get_finished_spans(), "rollout"), "the rollout is still open"
    reconcile(tracer, "rev-1", 20, ends_in="Succeeded")
    spans = exporter.get_finished_spans()
    trace_id, root_id = rollout_ids(canary(), "rev-1")
    assert {span.context.trace_id for span in spans} == {trace_id}

    (root,) = by_name(spans, "rollout")
    assert root.parent is None and root.context.span_id == root_id
    assert root.attributes is not None and root.attributes["canaryctl.verdict"] == "Succeeded"
    reconciles = by_name(spans, "reconcile")
    assert len(reconciles) == 2
    assert root.start_time is not None and reconciles[0].start_time is not None
    assert root.start_time <= reconciles[0].start_time, "the root starts with the rollout's first tick"
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


def test_a_new_revision_supersedes_the_open_rollout() -> None:
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    reconcile(tracer, "rev-2", 0)
    (root,) = by_name(exporter.get_finished_spans(), "rollout")
    assert root.context.trace_id == rollout_ids(canary(), "rev-1")[0]
    assert root.attributes is not None and root.attributes["canaryctl.verdict"] == "Superseded"
    tracer.abandon(canary())
    roots = by_name(exporter.get_finished_spans(), "rollout")
    assert [r.attributes["canaryctl.verdict"] for r in roots if r.attributes] == ["Superseded", "Deleted"]


def test_a_tick_with_nothing_to_do_records_nothing() -> None:
    tracer, exporter = traced()
    with tracer.tick(canary("Succeeded"), None) as tick, tracer.span("router", router="istio"):
        tick.end(CanaryStatus.model_validate({"phase": "Succeeded"}))
    with tracer.span("webhook"):  # outside any tick
        pass
    assert exporter.get_finished_spans() == ()


def test_exceptions_mark_the_span_failed() -> None:
    tracer, exporter = traced()
    with pytest.raises(RuntimeError), tracer.tick(canary(), "rev"), tracer.span("router"):
        raise RuntimeError("apply failed")
    router, tick = exporter.get_finished_spans()
    assert router.status.status_code is StatusCode.ERROR
    assert tick.status.status_code is StatusCode.ERROR


def retry(command_id: str = "r1") -> Command:
    return Command(CommandKind.RETRY, command_id)


@pytest.mark.parametrize(
    ("phase", "observed", "command", "expected"),
    [
        (None, "rev-1", None, "rev-1"),  # initialization is the first revision's rollout
        ("Initializing", "rev-1", None, "rev-1"),
        ("Initialized", "rev-1", None, None),  # idle
        ("Succeeded", "rev-1", None, None),
        ("Failed", "rev-1", None, None),
        ("Succeeded", "rev-2", None, "rev-2"),  # the detecting tick is the new rollout's
        ("Waiting", "rev-2", None, "rev-2"),  # held at confirm-rollout: the new rollout, not adopted yet
        ("Progressing", "rev-1", None, "rev-1"),
        ("Progressing", "rev-2", None, "rev-2"),  # restarted by a newer revision
        ("WaitingPromotion", "rev-1", None, "rev-1"),
        ("Promoting", "rev-2", None, "rev-1"),  # promotion finishes the applied revision
        ("Finalising", "rev-2", None, "rev-1"),
        ("Failed", "rev-1", retry(), "rev-1"),  # a retry restarts the failed rollout
        ("Failed", "rev-1", retry("old"), None),  # already handled
        ("Succeeded", "rev-1", Command(CommandKind.PAUSE, "p"), None),  # ignored on a finished canary
        ("Terminating", "rev-2", None, None),
    ],
)
def test_the_revision_a_tick_works_on(
    phase: str | None, observed: str, command: Command | None, expected: str | None
) -> None:
    assert rollout_revision(canary(phase), observed, command) == expected


def test_a_suspended_canary_records_nothing() -> None:
    assert rollout_revision(canary("Progressing", suspend=True), "rev-2") is None


@pytest.fixture()
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_exporters_are_the_sdks_choice(
    otel_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert processors_from_env() == []  # nothing unless asked
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert processors_from_env() == []
    otel_env.setenv("OTEL_TRACES_EXPORTER", "console")
    processors = processors_from_env()
    assert [type(p) for p in processors] == [BatchSpanProcessor]
    assert isinstance(getattr(processors[0], "span_exporter", None), ConsoleSpanExporter)
    Tracer(processors).shutdown()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp_json_http")
    (json_http,) = processors_from_env()
    exporter = getattr(json_http, "span_exporter", None)
    assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.json")
    json_http.shutdown()
    with caplog.at_level(logging.WARNING):
        otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp")  # the SDK maps it to otlp_proto_grpc: not installed
        assert processors_from_env() == []
    assert "otlp_proto_grpc" in caplog.text and "otlp_json_http" in caplog.text


def test_the_resource_is_the_sdks(otel_env: pytest.MonkeyPatch) -> None:
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    assert exporter.get_finished_spans()[0].resource.attributes["service.name"] == "canaryctl"
    otel_env.setenv("OTEL_SERVICE_NAME", "rollouts")
    otel_env.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    tracer, exporter = traced()
    reconcile(tracer, "rev-1", 10)
    attributes = exporter.get_finished_spans()[0].resource.attributes
    assert (attributes["service.name"], attributes["deployment.environment"]) == ("rollouts", "prod")


class OtlpReceiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector endpoint that keeps each JSON export request it is sent."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/json":
            self.received.append(json.loads(body))
            self.send_response(200)
        else:
            self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


# A rollout's spans exported by the [otlp] extra's exporter in a process where opentelemetry.proto
# refuses to import: xds-protos (the mesh's Envoy protos) overwrites its files with an old copy (and adds
# an opentelemetry/__init__.py), so the export path must not depend on them at all.
EXPORTING_PROCESS = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Clash(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.proto" or name.startswith("opentelemetry.proto."):
                raise ImportError(f"{name}: clashing opentelemetry.proto files")
            return None

    sys.meta_path.insert(0, Clash())
    if sys.argv[1:] == ["probe"]:
        import opentelemetry.proto.trace.v1.trace_pb2
    from canaryctl.api.models import CanaryStatus
    from canaryctl.telemetry import Tracer
    from tests.telemetry.test_tracing import canary
    tracer = Tracer()
    with tracer.tick(canary(), "rev-1") as tick, tracer.span("router", router="canaryctl", weight=20):
        pass
    tick.end(CanaryStatus(phase="Succeeded"))
    tracer.shutdown()
    """
)


@pytest.mark.slow
def test_otlp_export_never_needs_opentelemetry_proto() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
    OtlpReceiver.received.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "OTEL_TRACES_EXPORTER": "otlp_json_http",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}/v1/traces",
    }
    command = [sys.executable, "-c", EXPORTING_PROCESS]
    try:
        probe = subprocess.run([*command, "probe"], env=env, capture_output=True, text=True, timeout=60)
        assert "clashing opentelemetry.proto files" in probe.stderr, "the clash is not in effect"
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    spans = [
        span
        for request in OtlpReceiver.received
        for resource_spans in request["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    assert sorted(span["name"] for span in spans) == ["reconcile", "rollout", "router"]
    assert len({span["traceId"] for span in spans}) == 1
    assert spans[0]["traceId"] == format(rollout_ids(canary(), "rev-1")[0], "032x")
    router = next(span for span in spans if span["name"] == "router")
    attributes = {a["key"]: a["value"] for a in router["attributes"]}
    assert attributes["canaryctl.router"] == {"stringValue": "canaryctl"}
    resource = OtlpReceiver.received[0]["resourceSpans"][0]["resource"]
    assert {"key": "service.name", "value": {"stringValue": "canaryctl"}} in resource["attributes"]


def test_without_an_exporter_spans_are_not_recorded_but_the_rollouts_trace_id_is_carried() -> None:
    """Nothing to export to: no span is recorded, yet what a tick logs or sends (traceparent) still
    names the rollout's trace."""
    tracer = Tracer(processors=[])
    trace_id, root_id = rollout_ids(canary(), "rev-1")
    with tracer.tick(canary(), "rev-1"), tracer.span("metric", metric="success"):
        current = trace.get_current_span()
        assert not current.is_recording()
        assert (current.get_span_context().trace_id, current.get_span_context().span_id) == (
            trace_id,
            root_id,
        )
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers)
    assert headers["traceparent"] == f"00-{trace_id:032x}-{root_id:016x}-01"
