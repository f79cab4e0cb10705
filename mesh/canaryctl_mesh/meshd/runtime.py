"""How meshd's processes run their event loop.

Why the garbage collector is tuned: a push to thousands of sidecars holds about a dozen small
objects per stream in flight (its task's frame, the write, the future waiting for the ACK) for as
long as the push takes. With CPython's default first threshold (700 allocations) the collector ran
about 40 times during one push at 2,000 sidecars, promoting all of them into the older generations,
and then a full collection of the control plane's ~300,000 objects (~0.25 s of CPU, the whole loop
stopped) followed every few pushes: about a third of the control plane's CPU per weight change, and
the slowest sidecars' ACKs waited for it. What a push allocates is freed by reference counting when
the push ends, so a first threshold above what one push holds in flight lets it end before the
collector looks. Cyclic garbage still gets collected, just after more allocations.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

YOUNG_COLLECTION_THRESHOLD = 100_000
"""Allocations between collections of the youngest generation: a push holds ~13 objects per stream
in flight, so this covers one push to several thousand sidecars."""


def tune_collector() -> None:
    """Collect the youngest generation after `YOUNG_COLLECTION_THRESHOLD` allocations (the older
    generations keep their ratios)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` as meshd's processes do."""
    tune_collector()
    return asyncio.run(main)
