"""Traces of a running operator (real kopf over the emulated API): one trace per rollout, closed when it
ends; idle ticks record nothing; every webhook call and metric query carries the W3C traceparent of the
span that made it, through the OpenTelemetry httpx instrumentation (the metric provider here is Graphite's,
whose calls go through the providers' shared httpx transport)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import kmock
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from canaryctl.api.models import Canary, CanaryAnalysis
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl.telemetry.tracing import Tracer, rollout_ids
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import running_kubelet
from tests.operator.helpers import (
    METRIC_TEMPLATE,
    NS,
    canary,
    get_canary,
    setup_target,
    wait_for,
    wait_phase,
    workload,
)
from tests.parity.scheduler import serving
from tests.telemetry.controller import running_controller

pytestmark = pytest.mark.asyncio
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")
HOOK_TYPES = ("confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout")


@dataclass
class Recorder:
    """Answers webhooks (200) and Graphite render queries (100), keeping each request's traceparent."""

    url: str = ""
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (what, traceparent)

    async def hook(self, request: web.Request) -> web.Response:
        self.seen.append((f"hook {request.match_info['type']}", request.headers.get("traceparent")))
        return web.Response(text="ok")

    async def render(self, request: web.Request) -> web.Response:
        self.seen.append((f"query {request.query.get('target')}", request.headers.get("traceparent")))
        return web.json_response([{"target": "success", "datapoints": [[100.0, int(time.time())]]}])


@contextlib.asynccontextmanager
async def recording() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/hooks/{type}", recorder.hook)
    app.router.add_get("/render", recorder.render)
    async with serving(app) as url:
        recorder.url = url
        yield recorder


@pytest.mark.slow
async def test_one_trace_per_rollout_idle_ticks_silent_and_traceparent_everywhere(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CanaryAnalysis, "min_interval_seconds", 0.3)
    exporter = InMemorySpanExporter()
    async with running_kubelet(emulator), recording() as recorder:
        hooks = [{"name": kind, "type": kind, "url": f"{recorder.url}/hooks/{kind}"} for kind in HOOK_TYPES]
        metric = {"name": "success", "templateRef": {"name": "graphite"}, "thresholdRange": {"min": 90}}
        manifest = canary("podinfo", interval="300ms", stepWeight=50, webhooks=hooks, metrics=[metric])
        template = METRIC_TEMPLATE | {
            "metadata": {"name": "graphite", "namespace": NS},
            "spec": {"provider": {"type": "graphite", "address": recorder.url}, "query": "target=success"},
        }
        metrics = ControllerMetrics()
        async with running_controller(emulator, metrics) as controller:
            controller.operator.tracer = Tracer([SimpleSpanProcessor(exporter)])
            await setup_target(objects, "Deployment", "podinfo")
            await objects.apply(template)
            await objects.apply(manifest)
            await wait_phase(objects, "podinfo", "Initialized", timeout=60)
            initialized = len(exporter.get_finished_spans())
            recorder.seen.clear()
            await objects.apply(workload("Deployment", "podinfo", image="app:v2", config="podinfo-config"))
            done = Canary.model_validate(await wait_phase(objects, "podinfo", "Succeeded", timeout=90))
            await asyncio.sleep(0.5)  # post-rollout hooks and the closing span follow the stored status
            after_rollout = len(exporter.get_finished_spans())
            idle_from = controller.operator.ticks

            async def idled() -> bool:
                return controller.operator.ticks >= idle_from + 3

            await wait_for(idled, timeout=60, what="three idle ticks")
            assert len(exporter.get_finished_spans()) == after_rollout, "idle ticks recorded spans"
            assert (await get_canary(objects, "podinfo"))["status"]["phase"] == "Succeeded"

    spans = exporter.get_finished_spans()[initialized:]
    assert done.status is not None and done.status.last_applied_spec is not None
    trace_id, root_id = rollout_ids(done, done.status.last_applied_spec)
    assert {span.context.trace_id for span in spans} == {trace_id}, "one rollout, one trace"
    roots = [span for span in spans if span.name == "rollout"]
    assert [(r.context.span_id, (r.attributes or {})["canaryctl.verdict"]) for r in roots] == [
        (root_id, "Succeeded")
    ]
    by_id = {span.context.span_id: span for span in spans}
    calls = {what if what.startswith("hook") else "query" for what, _ in recorder.seen}
    assert calls == {f"hook {kind}" for kind in HOOK_TYPES} | {"query"}, calls
    for what, header in recorder.seen:
        match = TRACEPARENT.match(header or "")
        assert match is not None, f"{what} carried traceparent {header!r}"
        assert int(match[1], 16) == trace_id, what
        parent = by_id.get(int(match[2], 16))
        assert parent is not None, what
        assert parent.name == ("webhook" if what.startswith("hook") else "metric"), what
