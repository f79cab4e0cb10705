"""Fixtures for the parity suite: Flagger's scheduler fixture over kmock's emulator (see ``scheduler.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import kmock
import pytest_asyncio

from tests.kube.cluster import PrometheusStub, running_prometheus
from tests.parity.scheduler import Obj, Scheduler, emulator, new_scheduler, seed  # noqa: F401

NewScheduler = Callable[..., Awaitable[Scheduler]]


@pytest_asyncio.fixture()
async def prometheus() -> AsyncIterator[PrometheusStub]:
    """Flagger's TestMain metrics server: every query answers 100."""
    async with running_prometheus() as stub:
        yield stub


@pytest_asyncio.fixture()
async def fixture(
    emulator: kmock.KubernetesEmulator,  # noqa: F811
    prometheus: PrometheusStub,
) -> AsyncIterator[NewScheduler]:
    """``newDeploymentFixture(canary)``: seeds the shared objects plus ``objs`` (target, HPA, Canary)."""
    made: list[Scheduler] = []

    async def make(*objs: Obj) -> Scheduler:
        scheduler = new_scheduler(emulator, prometheus.url)
        made.append(scheduler)
        await seed(scheduler, prometheus.url, *objs)
        return scheduler

    yield make
    for scheduler in made:  # the operator's API clients, which its run() would close
        await scheduler.operator.objects.aclose()
        await scheduler.operator.router_objects.aclose()
