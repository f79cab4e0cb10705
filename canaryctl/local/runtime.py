"""``canaryctl local run``: the whole rollout of one Canary against two local endpoints.

The same engine and runner as on Kubernetes; only the ports differ: the endpoints are URLs, the router
is the included mesh's Envoy in local mode, metrics come from a Prometheus (given, or started here
scraping that Envoy) or straight from Envoy's stats.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from canaryctl import registry
from canaryctl.api.models import Canary, CanaryStatus, Phase
from canaryctl.engine.types import Decision, RouteState
from canaryctl.local.console import Console, ConsoleEvents
from canaryctl.local.envoy_stats import EnvoyStatsAnalyzer
from canaryctl.local.manifests import Bundle
from canaryctl.local.prometheus import LocalPrometheus
from canaryctl.local.router import LocalRouter
from canaryctl.local.targets import Endpoint, LocalTargets, LocalWorkloads, endpoint_revision
from canaryctl.ports import Analyzer, Notifier
from canaryctl.runner import ActionFailed, Ports, tick
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl.telemetry.tracing import Tracer
from canaryctl_mesh.local import LocalMesh
from canaryctl_providers.metrics.analyzer import MetricsAnalyzer
from canaryctl_providers.notifiers.routing import AlertRouter
from canaryctl_providers.webhooks import WebhookClient

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


# A Prometheus this runtime just started is ready, yet on a starved machine its first query can miss
# the query deadline: ask again a few times before calling it unavailable. A given address is asked once.
STARTED_PROMETHEUS_CHECKS = 4
STARTED_PROMETHEUS_RETRY_SECONDS = 1.0


class ProviderUnavailable(RuntimeError):
    """A metrics provider the Canary needs does not answer: refuse to start rather than hold blind."""


AUTO = "auto"


@dataclass
class LocalOptions:
    primary: str
    canary: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    prometheus: str | None = None  # None: Envoy stats; "auto": start one; else its URL
    status_file: Path | None = None
    timeout: float = 1800.0
    cluster: str = "local"
    default_notifier: Notifier | None = None
    tracer: Tracer | None = None  # default: one configured from OTEL_* (exports nothing unless asked)
    metrics: ControllerMetrics | None = None  # the controller's metrics, recorded as the operator does


@dataclass
class LocalRun:
    """The outcome of a local run."""

    canary: Canary
    listen_url: str = ""
    timed_out: bool = False

    @property
    def phase(self) -> Phase | None:
        return self.canary.status.phase if self.canary.status else None


def write_status(path: Path, canary: Canary) -> None:
    """Rename-swap, so a reader never sees half a file."""
    document = {
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "status": (canary.status or CanaryStatus()).to_wire(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


class LocalRuntime:
    def __init__(self, bundle: Bundle, options: LocalOptions, console: Console) -> None:
        self.bundle = bundle
        self.options = options
        self.console = console
        self.targets = LocalTargets(Endpoint(options.primary), Endpoint(options.canary))
        self.mesh = LocalMesh(options.listen_host, options.listen_port)
        self.events = ConsoleEvents(console)
        self.on_started: Callable[[str], None] | None = None
        self.on_tick: Callable[[Canary], None] | None = None

    async def _notifier(self, name: str, namespace: str) -> Notifier:
        provider = self.bundle.alert_provider(name)
        return registry.notifier(provider.spec, None)

    async def _analyzer(self, stack: AsyncExitStack) -> Analyzer:
        choice = self.options.prometheus
        if choice is None:
            return EnvoyStatsAnalyzer(self.mesh.stats_url)
        checks = 1
        if choice == AUTO:
            prometheus = LocalPrometheus.scraping("canaryctl-envoy", self.mesh.stats_url)
            await asyncio.to_thread(prometheus.start)
            stack.callback(prometheus.stop)
            choice = prometheus.url
            checks = STARTED_PROMETHEUS_CHECKS
        analyzer = MetricsAnalyzer(templates=self.bundle.template, default_address=choice)
        problems = await analyzer.availability(self.bundle.canary)
        for _ in range(checks - 1):
            if not problems:
                break
            await asyncio.sleep(STARTED_PROMETHEUS_RETRY_SECONDS)
            problems = await analyzer.availability(self.bundle.canary)
        if problems:
            raise ProviderUnavailable("; ".join(problems))
        return analyzer

    def _initial(self) -> Canary:
        """The primary already serves; the canary endpoint is the new revision to roll out."""
        primary_revision = endpoint_revision(self.targets.primary)
        status = CanaryStatus(
            phase=Phase.INITIALIZED,
            last_applied_spec=primary_revision,
            last_promoted_spec=primary_revision,
            message="primary serving all traffic",
        )
        return self.bundle.canary.model_copy(update={"status": status})

    async def run(self) -> LocalRun:
        async with AsyncExitStack() as stack:
            await self.mesh.start()
            stack.push_async_callback(self.mesh.stop)
            analyzer = await self._analyzer(stack)
            metrics = self.options.metrics
            hooks = WebhookClient(observe=metrics.observe_webhook if metrics else None)
            stack.push_async_callback(hooks.aclose)
            router = LocalRouter(self.mesh, self.targets)
            ports = Ports(
                workloads=LocalWorkloads(self.targets),
                router=router,
                analyzer=analyzer,
                hooks=hooks,
                alerts=AlertRouter(self._notifier, self.options.default_notifier),
                events=self.events,
                cluster=self.options.cluster,
                tracer=self.options.tracer or Tracer(),
            )
            canary = self._initial()
            await router.apply(canary, RouteState())
            if self.on_started is not None:
                self.on_started(self.mesh.listen_url)
            return await self._loop(canary, ports, analyzer)
        raise AssertionError("unreachable")  # pragma: no cover - AsyncExitStack re-raises

    async def _loop(self, canary: Canary, ports: Ports, analyzer: Analyzer) -> LocalRun:
        deadline = time.monotonic() + self.options.timeout
        run = LocalRun(canary, self.mesh.listen_url)
        while time.monotonic() < deadline:
            if isinstance(analyzer, EnvoyStatsAnalyzer):
                try:
                    await analyzer.snapshot()
                except httpx.HTTPError as exc:  # a starved Envoy admin: no tick without fresh counters
                    self.console.event(f"Envoy stats not read, retrying: {exc!r}", warning=True)
                    await asyncio.sleep(1.0)
                    continue
            ticked = time.monotonic()
            try:
                decision: Decision = await tick(canary, ports)
            except ActionFailed as exc:
                self.console.event(f"action failed, retrying: {exc}", warning=True)
                await asyncio.sleep(1.0)
                continue
            before, canary = canary, canary.model_copy(update={"status": decision.status})
            if self.options.metrics is not None:
                self.options.metrics.record_tick(before, canary, time.monotonic() - ticked)
            run.canary = canary
            self.console.show(canary)
            if self.on_tick is not None:
                self.on_tick(canary)
            if self.options.status_file is not None:
                write_status(self.options.status_file, canary)
            if decision.status.phase in TERMINAL:
                return run
            await asyncio.sleep(min(max(decision.requeue_after, 0.05), max(0.0, deadline - time.monotonic())))
        run.timed_out = True
        return run
