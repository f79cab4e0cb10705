"""What the cluster has installed, for routers whose output depends on it.

A router asks for a fact about one CustomResourceDefinition (does the HTTPRoute CRD keep
``requestMirror.percent``?) through a probe, a pure function of the CRD object. The answer is cached per
``Objects`` for ``TTL_SECONDS``: the operator re-applies routes every tick, and a CRD (the Gateway API
one is 400 KiB) must not be read on each. An upgraded CRD is noticed within the TTL. A CRD that is
absent reads as None; a read the API server refuses (no RBAC) raises, so an unknown answer is never
taken for "not installed".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeVar
from weakref import WeakKeyDictionary

from canaryctl.ports import Objects

CRD_API_VERSION: Final = "apiextensions.k8s.io/v1"
CRD_KIND: Final = "CustomResourceDefinition"
TTL_SECONDS: Final = 60.0

T = TypeVar("T")
Probe = Callable[[dict[str, Any] | None], T]

_answers: WeakKeyDictionary[Objects, dict[tuple[str, str], tuple[float, Any]]] = WeakKeyDictionary()


def cached(objects: Objects, crd_name: str, probe: Probe[T]) -> tuple[bool, T | None]:
    """(known, answer) from the cache alone, without I/O: for the synchronous ``unsupported`` check."""
    entry = _answers.get(objects, {}).get((crd_name, probe.__qualname__))
    if entry is None or time.monotonic() - entry[0] > TTL_SECONDS:
        return False, None
    answer: T = entry[1]
    return True, answer


async def crd_fact(objects: Objects, crd_name: str, probe: Probe[T]) -> T:
    """``probe(crd)`` for the CRD named ``crd_name`` (None when absent), read at most once per TTL."""
    known, answer = cached(objects, crd_name, probe)
    if known:
        return answer  # type: ignore[return-value]
    crd = await objects.get(CRD_API_VERSION, CRD_KIND, "", crd_name)
    fresh = probe(crd)
    _answers.setdefault(objects, {})[crd_name, probe.__qualname__] = (time.monotonic(), fresh)
    return fresh
