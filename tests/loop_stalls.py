"""How long the event loop stops answering while work runs on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def loop_stalls(period: float, settle: float) -> AsyncIterator[list[float]]:
    """The gaps between the beats of a timer due every ``period`` seconds while the block runs (started
    ``settle`` seconds before it); their maximum is the longest the loop was held."""
    gaps = [0.0]

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(settle)
    try:
        yield gaps
    finally:
        beating.cancel()
