"""A running operator (real kopf over kmock's emulator) serving its metrics, and a real Prometheus
scraping them: what the dashboard, alert and Flagger-compat tests query."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kmock

from canaryctl.local.prometheus import LocalPrometheus
from canaryctl.operator.handlers import CanaryOperator, OperatorConfig
from canaryctl.telemetry.metrics import ControllerMetrics, MetricsServer, serve_metrics
from canaryctl_mesh.kube import api_client_for_host
from tests.kube.emulator import emulator_url


@dataclass
class Controller:
    operator: CanaryOperator
    metrics: ControllerMetrics
    server: MetricsServer

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"


@contextlib.asynccontextmanager
async def running_controller(
    emulator: kmock.KubernetesEmulator, metrics: ControllerMetrics, **config: Any
) -> AsyncIterator[Controller]:
    """The operator in its own thread and loop (as in its own process), its /metrics on loopback."""
    operator = CanaryOperator(
        OperatorConfig(peering=None, **config), api_client_for_host(emulator_url(emulator)), metrics
    )
    server = serve_metrics(metrics, 0, host="127.0.0.1")
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=asyncio.run, args=(operator.run(stop_flag=stop, ready_flag=ready),), daemon=True
    )
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "operator not ready within 10 s"
        yield Controller(operator, metrics, server)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        server.stop()


@contextlib.contextmanager
def prometheus_scraping(
    targets: dict[str, str], rule_files: list[Path] | None = None, jobs: list[dict[str, Any]] | None = None
) -> Iterator[Prometheus]:
    """A real Prometheus scraping each ``job: URL`` (and ``jobs``, scrape configs as they are) every
    second, evaluating ``rule_files`` as often."""
    configs = list(jobs or [])
    for job, url in targets.items():
        parsed = httpx.URL(url)
        configs.append(
            {
                "job_name": job,
                "metrics_path": parsed.path,
                "static_configs": [{"targets": [f"{parsed.host}:{parsed.port}"]}],
            }
        )
    local = LocalPrometheus(configs, [str(path) for path in rule_files or []])
    local.start()
    try:
        yield Prometheus(local.url)
    finally:
        local.stop()


@dataclass(frozen=True)
class Prometheus:
    url: str

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant vector as [{"metric": labels, "value": float}]; a scalar as one unlabelled item."""
        data = self.api("query", query=promql)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def values(self, promql: str, *label: str) -> dict[tuple[str, ...], float]:
        """The query's samples keyed by the values of ``label`` names."""
        return {tuple(r["metric"].get(n, "") for n in label): r["value"] for r in self.query(promql)}

    def until(self, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Polls until the query returns something (scrapes and rule evaluations are a second apart)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.query(promql)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)
