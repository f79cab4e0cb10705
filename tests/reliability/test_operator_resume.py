"""An operator starting (a restart, or a standby taking over) with many Canaries already there: their
first ticks spread over their interval, and no more ticks than the bound run at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet
from tests.kube.emulator import StampingEmulator, emulator, kube_api, objects  # noqa: F401
from tests.kube.faults import ApiFaults, fault_proxy
from tests.operator.conftest import (  # noqa: F401
    StartOperator,
    kubelet,
    prometheus,
    start_operator,
)
from tests.operator.helpers import METRIC_TEMPLATE, canary, wait_for, workload

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

CANARIES = 16
INTERVAL = 6.0


@pytest_asyncio.fixture()
async def faults(emulator: StampingEmulator) -> AsyncIterator[ApiFaults]:  # noqa: F811
    async with fault_proxy(emulator) as proxy:  # no faults: it times each status write
        yield proxy


async def existing_canaries(objects: KubeObjects) -> list[str]:  # noqa: F811
    await objects.apply(METRIC_TEMPLATE)
    names = [f"app{index}" for index in range(CANARIES)]
    for name in names:
        await objects.apply(workload("Deployment", name))
        await objects.apply(canary(name, interval=f"{INTERVAL:g}s"))
    return names


async def first_writes(faults: ApiFaults, names: list[str]) -> dict[str, float]:
    """When each Canary's status was first written (its first tick), once every one's was."""

    def first() -> dict[str, float]:
        found: dict[str, float] = {}
        for at, _, name, _ in faults.status_writes:
            found.setdefault(name, at)
        return found

    async def all_ticked() -> bool:
        return len(first()) == len(names)

    await wait_for(all_ticked, 10 * INTERVAL, "a first tick of every Canary")
    return first()


async def test_canaries_found_at_start_begin_spread_over_their_interval(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
) -> None:
    names = await existing_canaries(objects)
    await start_operator(server=faults.url)
    times = sorted((await first_writes(faults, names)).values())
    spread = times[-1] - times[0]
    # Uniform over the interval: 16 starts span less than a third of it about once in 10^6 runs.
    assert spread >= INTERVAL / 3, f"first ticks within {spread:.2f}s of each other"


async def test_no_more_ticks_than_the_bound_run_at_once(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
) -> None:
    names = await existing_canaries(objects)
    running = await start_operator(server=faults.url, start_jitter=0, max_concurrent_ticks=2)
    await first_writes(faults, names)
    assert 1 <= running.operator.peak_first_ticks <= 2
