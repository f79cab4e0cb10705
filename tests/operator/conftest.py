"""Real kopf running canaryctl's operator against kmock's emulator, with the shared stand-ins for the
controllers and Prometheus the emulator lacks.

Each operator runs in its own thread and event loop, as in its own process: kopf cancels every task
created in its loop after it started when it stops, which must not hit the test's tasks or a peer's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kmock
import pytest
import pytest_asyncio

from canaryctl.api.models import CanaryAnalysis
from canaryctl.operator.handlers import CanaryOperator, OperatorConfig
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl_mesh.kube import api_client_for_host
from tests.kube.cluster import Kubelet, PrometheusStub, running_kubelet, running_prometheus
from tests.kube.emulator import StampingEmulator, emulator, emulator_url, kube_api, objects  # noqa: F401

MIN_INTERVAL_SECONDS = 0.3


@dataclass
class RunningOperator:
    operator: CanaryOperator
    stop_flag: threading.Event
    thread: threading.Thread

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "operator did not stop within 20 s"


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture(autouse=True)
def short_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short intervals for Canaries validated outside an operator (which is given its own setting)."""
    monkeypatch.setattr(CanaryAnalysis, "min_interval_seconds", MIN_INTERVAL_SECONDS)


@pytest_asyncio.fixture()
async def kubelet(emulator: StampingEmulator) -> AsyncIterator[Kubelet]:  # noqa: F811
    async with running_kubelet(emulator) as running:
        yield running


@pytest_asyncio.fixture()
async def prometheus() -> AsyncIterator[PrometheusStub]:
    async with running_prometheus() as stub:
        yield stub


@pytest_asyncio.fixture()
async def start_operator(
    emulator: kmock.KubernetesEmulator,  # noqa: F811
    prometheus: PrometheusStub,
) -> AsyncIterator[StartOperator]:
    """Starts an operator (standalone unless ``peering=`` is given) and waits until kopf is ready;
    ``server=`` points it at another URL than the emulator's (a proxy in front of it)."""
    running: list[RunningOperator] = []

    async def start(server: str | None = None, **overrides: Any) -> RunningOperator:
        options: dict[str, Any] = {
            "peering": None,
            "prometheus_url": prometheus.url,
            "min_interval_seconds": MIN_INTERVAL_SECONDS,
        }
        config = OperatorConfig(**(options | overrides))
        operator = CanaryOperator(
            config, api_client_for_host(server or emulator_url(emulator)), ControllerMetrics()
        )
        stop_flag, ready_flag = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=asyncio.run, args=(operator.run(stop_flag=stop_flag, ready_flag=ready_flag),), daemon=True
        )
        thread.start()
        assert await asyncio.to_thread(ready_flag.wait, 10), "operator not ready within 10 s"
        handle = RunningOperator(operator, stop_flag, thread)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if handle.thread.is_alive():
            await handle.stop()
