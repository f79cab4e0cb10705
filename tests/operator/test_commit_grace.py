"""A tick cancelled once it has begun to act finishes its actions and status write first, within a grace;
cancelled again during the grace (a second Ctrl-C, a forced stop) the work ends too, never left running."""

from __future__ import annotations

import asyncio

import pytest

from canaryctl.runner import finish_started

pytestmark = pytest.mark.asyncio


async def test_a_cancelled_caller_waits_for_the_started_work_then_is_cancelled() -> None:
    finished = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.2)
        finished.set()

    caller = asyncio.ensure_future(finish_started(work(), grace=5.0))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished.is_set()


@pytest.mark.parametrize(("grace", "cancels"), [(0.1, 1), (5.0, 2)], ids=["past-grace", "cancelled-twice"])
async def test_work_past_its_grace_or_cancelled_twice_is_cancelled_not_left_running(
    grace: float, cancels: int
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(finish_started(work(), grace=grace))
    await started.wait()
    for _ in range(cancels):
        caller.cancel()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 2.0)
    await asyncio.wait_for(cancelled.wait(), 2.0)
