"""Log lines, text and JSON: each carries the canary, namespace, phase and step of the tick it was written
in and the trace and span ids of the span current at the time; kopf's per-object lines name their object;
the operator's command line takes --log-format and --log-level."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from canaryctl.api.models import Canary
from canaryctl.operator import cli
from canaryctl.telemetry.logs import configure_logging
from canaryctl.telemetry.tracing import Tracer

CANARY = Canary.model_validate(
    {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 80}},
        "status": {"phase": "Progressing", "currentStep": 3, "lastAppliedSpec": "rev-1"},
    }
)
log = logging.getLogger("canaryctl.test")


@pytest.fixture()
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(log_format: str, level: str = "INFO") -> tuple[list[str], InMemorySpanExporter]:
    """Writes one record outside any tick, one in a tick, one in a span of it, one from kopf."""
    stream = io.StringIO()
    configure_logging(level, log_format, stream)
    exporter = InMemorySpanExporter()
    tracer = Tracer([SimpleSpanProcessor(exporter)])
    log.info("starting")
    with tracer.tick(CANARY, "rev-1"):
        log.info("tick")
        with tracer.span("webhook", webhook="load"):
            log.warning("webhook failed")
        log.debug("detail")
    logging.getLogger("kopf.objects").info("handled", extra={"k8s_ref": {"name": "other", "namespace": "ns"}})
    return stream.getvalue().splitlines(), exporter


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_the_canary_and_trace_ids() -> None:
    text, exporter = lines("json")
    records = [json.loads(line) for line in text]
    assert [r["message"] for r in records] == ["starting", "tick", "webhook failed", "handled"]
    outside, tick, webhook, kopf = records
    assert not {"canary", "trace_id"} & set(outside)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    for record, span in ((tick, spans["reconcile"]), (webhook, spans["webhook"])):
        assert (
            record
            | {
                "canary": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "step": 3,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": format(span.context.span_id, "016x"),
            }
            == record
        )
    assert webhook["level"] == "WARNING" and webhook["logger"] == "canaryctl.test" and "time" in webhook
    assert (kopf["canary"], kopf["namespace"]) == ("other", "ns")
    assert "k8s_ref" not in kopf


@pytest.mark.usefixtures("restore_root")
def test_text_lines_and_levels() -> None:
    text, exporter = lines("text", level="DEBUG")
    reconcile = next(s for s in exporter.get_finished_spans() if s.name == "reconcile")
    tick = next(line for line in text if "canaryctl.test: tick" in line)
    assert tick.endswith(
        f"canary=podinfo namespace=test phase=Progressing step=3 trace_id={reconcile.context.trace_id:032x} "
        f"span_id={reconcile.context.span_id:016x}"
    )
    assert any(line.endswith("detail canary=podinfo namespace=test phase=Progressing step=3 "
                             f"trace_id={reconcile.context.trace_id:032x} "
                             f"span_id={reconcile.context.span_id:016x}") for line in text)  # fmt: skip
    quiet, _ = lines("text", level="WARNING")
    assert len(quiet) == 1 and "webhook failed" in quiet[0]


def test_operator_flags() -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["operator", "--log-format", "json", "--log-level", "debug"])
    assert (args.log_format, args.log_level, args.metrics_compat) == ("json", "DEBUG", "canaryctl")
    args = parser.parse_args(["operator", "--metrics-compat", "flagger"])
    assert (args.log_format, args.log_level, args.metrics_compat) == ("text", "INFO", "flagger")
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "--log-format", "xml"])
