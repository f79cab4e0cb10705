"""The runner around the engine: what it calls, in which order, and what may fail without failing a tick.

Runs real ticks through the operator's ports over kmock's emulator (the parity suite's ``Scheduler``),
with a loopback webhook server that records when each hook started and ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import kmock
import pytest
import pytest_asyncio
from aiohttp import web

from canaryctl.api.models import Canary, Phase
from tests.kube.cluster import running_prometheus
from tests.parity.scheduler import (  # noqa: F401
    HPA,
    Obj,
    Scheduler,
    canary,
    emulator,
    new_scheduler,
    seed,
    serving,
    workload,
)

pytestmark = pytest.mark.asyncio


@dataclass
class HookServer:
    """``/<name>`` answers 200 after ``delays[name]`` seconds, or 500 for names in ``failing``."""

    url: str = ""
    failing: set[str] = field(default_factory=set)
    delays: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, float, float]] = field(default_factory=list)  # name, started, ended

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        started = time.monotonic()
        await asyncio.sleep(self.delays.get(name, 0.0))
        self.calls.append((name, started, time.monotonic()))
        return web.Response(status=500 if name in self.failing else 200)

    def hook(self, name: str, kind: str) -> Obj:
        return {"name": name, "type": kind, "url": f"{self.url}/{name}"}

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def one_after_another(self) -> bool:
        ordered = sorted(self.calls, key=lambda call: call[1])
        return all(later[1] >= earlier[2] for earlier, later in itertools.pairwise(ordered))


@pytest_asyncio.fixture()
async def hooks() -> AsyncIterator[HookServer]:
    server = HookServer()
    app = web.Application()
    app.router.add_post("/{name}", server.handle)
    async with serving(app) as url:
        server.url = url
        yield server


@pytest_asyncio.fixture()
async def scheduler(emulator: kmock.KubernetesEmulator) -> AsyncIterator[Scheduler]:  # noqa: F811
    async with running_prometheus() as prometheus:
        made = new_scheduler(emulator, prometheus.url)
        await seed(made, prometheus.url, workload("Deployment"), HPA)
        yield made


async def rollout(scheduler: Scheduler, manifest: Obj, until: Phase, intervals: int = 12) -> None:
    """Initialize, start a new revision and advance until ``until``."""
    await scheduler.apply(manifest)
    scheduler.make_primary_ready()
    await scheduler.advance()
    await scheduler.apply(workload("Deployment", "1.2.1"))
    scheduler.make_canary_ready()
    for _ in range(intervals):
        await scheduler.advance()
        if await scheduler.phase() is until:
            return
    raise AssertionError(f"not {until} after {intervals} intervals: {await scheduler.phase()}")


async def test_hooks_of_one_type_are_called_one_after_another_until_one_fails(
    scheduler: Scheduler, hooks: HookServer
) -> None:
    webhooks = [hooks.hook("migrate", "pre-rollout"), hooks.hook("smoke", "pre-rollout")]
    webhooks += [hooks.hook(name, "post-rollout") for name in ("report", "cleanup", "never")]
    hooks.delays |= {"migrate": 0.3, "report": 0.3}
    hooks.failing.add("cleanup")
    await rollout(scheduler, canary(maxWeight=10, webhooks=webhooks), Phase.SUCCEEDED)
    assert hooks.names() == ["migrate", "smoke", "report", "cleanup"]
    assert hooks.one_after_another(), "the second hook starts when the first has answered"
    recorded = {w.name: w.success for w in (await scheduler.status()).webhooks}
    assert recorded == {"migrate": True, "smoke": True, "report": True, "cleanup": False}


class ForbiddenEvents:
    """An Events backend that refuses every write, as an API server without RBAC for events does."""

    async def record(self, canary: Canary, reason: str, message: str, warning: bool) -> None:
        raise PermissionError("events is forbidden: cannot create resource events")


async def test_a_failing_event_write_does_not_fail_the_tick(scheduler: Scheduler) -> None:
    scheduler.events_override = ForbiddenEvents()
    await rollout(scheduler, canary(), Phase.PROGRESSING, intervals=1)
    assert scheduler.errors == []
    assert (await scheduler.status()).last_applied_spec is not None
    assert (await scheduler.get("apps/v1", "Deployment", "podinfo"))["spec"]["replicas"] == 1


async def test_events_the_api_server_refuses_are_dropped(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler.emulator["post /api/v1/namespaces/default/events"] << 403
    with caplog.at_level(logging.WARNING, logger="canaryctl.operator.adapters"):
        await rollout(scheduler, canary(), Phase.PROGRESSING, intervals=1)
        body = Canary.model_validate(await scheduler.canary_body())
        await scheduler.operator.events.record(body, "Synced", "the adapter itself does not raise", False)
    assert scheduler.errors == []
    assert any("not recorded: (403)" in record.getMessage() for record in caplog.records)
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary) == (90, 10)


async def test_event_hooks_all_hear_every_event_concurrently(scheduler: Scheduler, hooks: HookServer) -> None:
    webhooks = [hooks.hook("slow-audit", "event"), hooks.hook("chat", "event")]
    hooks.delays["slow-audit"] = 0.5
    hooks.failing.add("slow-audit")
    await scheduler.apply(canary(webhooks=webhooks))
    scheduler.make_primary_ready()
    await scheduler.advance()
    names = hooks.names()
    assert names.count("chat") == names.count("slow-audit") == len(scheduler.event_messages()) > 0
    assert not hooks.one_after_another(), "a slow receiver does not hold the others back"
