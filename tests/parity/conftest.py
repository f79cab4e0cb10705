"""Fixtures for the parity suite: Flagger's scheduler fixture over kmock's emulator (see ``scheduler.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import kmock
import pytest_asyncio

from tests.kube.cluster import PrometheusStub, running_prometheus
from tests.kube.emulator import running_emulator
from tests.parity.scheduler import Obj, Scheduler, new_scheduler, seed

NewScheduler = Callable[..., Awaitable[Scheduler]]


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    """Without a request log: hundreds of ticks per test, each matched against the log, are slow."""
    async with running_emulator(keep_requests=False) as running:
        yield running


@pytest_asyncio.fixture()
async def prometheus() -> AsyncIterator[PrometheusStub]:
    """Flagger's TestMain metrics server: every query answers 100."""
    async with running_prometheus() as stub:
        yield stub


@pytest_asyncio.fixture()
async def fixture(emulator: kmock.KubernetesEmulator, prometheus: PrometheusStub) -> NewScheduler:
    """``newDeploymentFixture(canary)``: seeds the shared objects plus ``objs`` (target, HPA, Canary)."""

    async def make(*objs: Obj) -> Scheduler:
        scheduler = new_scheduler(emulator, prometheus.url)
        await seed(scheduler, prometheus.url, *objs)
        return scheduler

    return make
