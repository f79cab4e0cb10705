"""A rollout on the local platform is one OpenTelemetry trace: its root, a reconcile per tick and spans for
its steps, checks, hooks and routing."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from canaryctl.api.models import Phase
from canaryctl.telemetry.tracing import Tracer
from e2e.platform import Scenario, run_scenario


def analysis(loadtester: str, _listen: str) -> dict[str, Any]:
    return {
        "stepWeight": 50,
        "maxWeight": 50,
        "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 95}}],
        "webhooks": [{"name": "smoke", "type": "pre-rollout", "url": f"{loadtester}/gate/approve"}],
    }


def test_spans_for_steps_metric_checks_webhooks_and_router_calls() -> None:
    exporter = InMemorySpanExporter()
    tracer = Tracer(processors=[SimpleSpanProcessor(exporter)])
    run = asyncio.run(run_scenario(Scenario("traced", analysis, tracer=tracer)))
    assert run.phase is Phase.SUCCEEDED
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert {"step", "metric", "webhook", "router"} <= set(by_name)
    metric = by_name["metric"][0].attributes
    assert metric["canaryctl.metric"] == "request-success-rate" and metric["canaryctl.value"] == 100.0
    hook = by_name["webhook"][0].attributes
    assert hook["canaryctl.webhook"] == "smoke" and hook["canaryctl.success"] is True
    weights = [s.attributes["canaryctl.weight"] for s in by_name["router"]]
    assert 50 in weights and weights[-1] == 0
    assert len({span.context.trace_id for span in spans}) == 1, "one rollout, one trace"
    (root,) = by_name["rollout"]
    assert root.parent is None and root.attributes["canaryctl.verdict"] == "Succeeded"
    assert all(span.parent.span_id == root.context.span_id for span in by_name["reconcile"])
