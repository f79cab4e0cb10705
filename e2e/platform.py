"""The small platform the e2e scenarios are written against, here on the local runtime.

A scenario names two app versions, a Canary analysis, the traffic users send and what an operator
does meanwhile (open a gate, hit the rollback switch). The platform runs it with real processes:
the demo app as v1 and v2, the included mesh's Envoy, the load tester and a Slack receiver, and
records what users saw, what each version served, every status the canary went through and every
Slack message.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from aiohttp import web

from canaryctl.api.models import Canary, Phase
from canaryctl.demo.app import SERVED, VERSION_HEADER, build_app
from canaryctl.demo.servers import LocalServer, SlackReceiver
from canaryctl.loadtester.server import build_app as build_loadtester
from canaryctl.local.console import Console
from canaryctl.local.manifests import load_texts
from canaryctl.local.prometheus import free_port
from canaryctl.local.runtime import LocalOptions, LocalRuntime
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl.telemetry.tracing import Tracer

NAMESPACE = "e2e"
SCENARIO_TIMEOUT_SECONDS = 120.0
USER_REQUEST_HEADER = "x-e2e-user-request"
"""Numbers each user request; Envoy copies it onto a mirrored request, so shadows name their original."""


@dataclass(frozen=True)
class Version:
    error_rate: float = 0.0
    latency_ms: float = 2.0


@dataclass(frozen=True)
class Seen:
    """One response as a user saw it."""

    at: float
    status: int
    version: str | None
    header: bool
    number: int  # the request's USER_REQUEST_HEADER


@dataclass(frozen=True)
class Tick:
    at: float
    phase: Phase | None
    weight: int
    mirror: int
    step: int
    message: str


@dataclass
class Run:
    canary: Canary | None = None
    seen: list[Seen] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    served: dict[str, Counter[int]] = field(default_factory=dict)
    slack: list[str] = field(default_factory=list)  # each message as Slack received it (JSON)
    mirrored: set[int] = field(default_factory=set)  # user requests the canary got a shadow copy of
    errors: list[str] = field(default_factory=list)
    stats_url: str = ""  # the mesh Envoy's /stats/prometheus, once it runs

    @property
    def phase(self) -> Phase | None:
        return self.canary.status.phase if self.canary and self.canary.status else None

    def first(self, predicate: Callable[[Tick], bool]) -> Tick | None:
        return next((tick for tick in self.ticks if predicate(tick)), None)

    def seen_between(self, start: float, end: float) -> list[Seen]:
        return [s for s in self.seen if start <= s.at < end]


@dataclass
class Context:
    """What a scenario's operator actions can reach while the canary runs."""

    loadtester_url: str
    run: Run

    async def wait_for(
        self, predicate: Callable[[Tick], bool], timeout: float = 2 * SCENARIO_TIMEOUT_SECONDS
    ) -> Tick:
        """The first tick that matches. The run's end cancels the wait first: the timeout only bounds a
        run that hangs, and a slow one is judged by the test's assertions on what it reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.run.first(predicate)
            if found is not None:
                return found
            await asyncio.sleep(0.2)
        raise TimeoutError("the canary never reached the awaited state")

    async def post(self, path: str) -> int:
        """A user's call to the load tester's gate API for this canary."""
        payload = {"name": self.run.canary.metadata.name if self.run.canary else "", "namespace": NAMESPACE}
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.post(f"{self.loadtester_url}{path}", json=payload)).status_code


Action = Callable[[Context], Coroutine[Any, Any, None]]


async def _nothing(_: Context) -> None:
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    analysis: Callable[[str, str], dict[str, Any]]  # (loadtester URL, listen URL) -> spec.analysis
    canary: Version = Version()
    header_share: float = 0.0  # fraction of users sending x-canary: insider
    rps: float = 10.0  # user requests per second, per client
    clients: int = 1  # users' clients, each sending one request at a time
    act: Action = _nothing
    prometheus: str | None = None
    tracer: Tracer | None = None
    metrics: ControllerMetrics | None = None


def _manifests(scenario: Scenario, loadtester: str, listen: str, slack: str) -> str:
    analysis = {"interval": "10s", "threshold": 1, **scenario.analysis(loadtester, listen)}
    analysis.setdefault("alerts", [{"name": "team", "severity": "info", "providerRef": {"name": "slack"}}])
    canary = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": scenario.name, "namespace": NAMESPACE},
        "spec": {
            "targetRef": {"kind": "Service", "name": scenario.name},
            "service": {"port": 80},
            "progressDeadlineSeconds": 60,
            "analysis": analysis,
        },
    }
    provider = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "slack", "namespace": NAMESPACE},
        "spec": {"type": "slack", "address": f"{slack}/services/e2e"},
    }
    return yaml.safe_dump_all([canary, provider], sort_keys=False)


async def _users(
    scenario: Scenario, url: str, run: Run, started: float, stop: asyncio.Event, first: int
) -> None:
    """A client sending requests until stopped, numbered from `first` in steps of the number of clients;
    every ``1/header_share``-th one carries the header."""
    every = round(1 / scenario.header_share) if scenario.header_share else 0
    async with httpx.AsyncClient(timeout=5) as client:
        for n in range(first, 100_000, scenario.clients):
            if stop.is_set():
                return
            header = bool(every) and n % every == 0
            headers = {USER_REQUEST_HEADER: str(n)} | ({"x-canary": "insider"} if header else {})
            try:
                response = await client.get(url, headers=headers)
                seen = Seen(
                    time.monotonic() - started,
                    response.status_code,
                    response.headers.get(VERSION_HEADER),
                    header,
                    n,
                )
                run.seen.append(seen)
            except httpx.HTTPError:
                run.seen.append(Seen(time.monotonic() - started, 0, None, header, n))
            await asyncio.sleep(1 / scenario.rps)


def _record_shadows(app: web.Application, mirrored: set[int]) -> None:
    """Note which user request each shadow copy the app receives is of (Envoy suffixes a mirrored
    request's host name with ``-shadow``: ``127.0.0.1-shadow:8080``)."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        number = request.headers.get(USER_REQUEST_HEADER)
        if (request.url.host or "").endswith("-shadow") and number is not None:
            mirrored.add(int(number))
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)


async def run_scenario(scenario: Scenario) -> Run:
    run = Run()
    slack = SlackReceiver()
    primary_app = build_app("v1", 0.0, 2.0, seed=1)
    canary_app = build_app("v2", scenario.canary.error_rate, scenario.canary.latency_ms, seed=2)
    _record_shadows(canary_app, run.mirrored)
    servers = [
        LocalServer(primary_app),
        LocalServer(canary_app),
        LocalServer(slack.build_app()),
        LocalServer(build_loadtester()),
    ]
    primary, canary, receiver, loadtester = servers
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for server in servers:
            await server.start()
        port = free_port()
        listen = f"http://127.0.0.1:{port}"
        bundle = load_texts(
            [(f"{scenario.name}.yaml", _manifests(scenario, loadtester.url, listen, receiver.url))]
        )
        options = LocalOptions(
            primary=primary.url,
            canary=canary.url,
            listen_port=port,
            prometheus=scenario.prometheus,
            tracer=scenario.tracer,
            metrics=scenario.metrics,
            timeout=SCENARIO_TIMEOUT_SECONDS,
        )
        runtime = LocalRuntime(bundle, options, Console(io.StringIO()))
        started = time.monotonic()

        def record(current: Canary) -> None:
            status = current.status
            assert status is not None
            run.canary = current
            run.ticks.append(
                Tick(
                    time.monotonic() - started,
                    status.phase,
                    status.canary_weight,
                    status.mirror_weight,
                    status.current_step,
                    status.message,
                )
            )

        def begin(url: str) -> None:
            run.stats_url = runtime.mesh.stats_url
            for first in range(scenario.clients):
                tasks.append(asyncio.create_task(_users(scenario, url, run, started, stop, first)))

        runtime.on_tick = record
        runtime.on_started = begin
        acting: asyncio.Task[None] = asyncio.create_task(scenario.act(Context(loadtester.url, run)))
        tasks.append(acting)
        result = await runtime.run()
        run.canary = result.canary
        if acting.done() and acting.exception() is not None:
            run.errors.append(f"operator action failed: {acting.exception()!r}")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.stop()
    run.served = {"v1": primary_app[SERVED], "v2": canary_app[SERVED]}
    run.slack = [json.dumps(message) for message in slack.messages]
    return run
