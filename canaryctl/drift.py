"""Write an object only where the stored one drifted from what canaryctl wants.

The operator's workloads and every router reconcile their objects each tick; comparing first keeps an
idle tick free of writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryctl.ports import Objects

Obj = dict[str, Any]
ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

# The digest of the whole object canaryctl last wrote, so dropping a field from it is drift too.
APPLIED_ANNOTATION = "canaryctl.dev/applied"
# Objects remembered as covering what was wanted, per Objects (one API server); past this many, forgotten.
MAX_COVERED = 65_536

# Per Objects: for each object, the stored copy (its identity and version) last found to cover what was
# wanted, and the digest of that. A read from the watch cache gives the very same dict while the object
# is unchanged, so the comparison (5 % of the operator's CPU in rollouts) is made once per change.
_covered: weakref.WeakKeyDictionary[Any, dict[ObjectKey, tuple[int, str, str]]] = weakref.WeakKeyDictionary()


def key(obj: Obj) -> ObjectKey:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


def _digest(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def stamped(obj: Obj) -> Obj:
    """``obj`` carrying the digest of itself in APPLIED_ANNOTATION. Only the metadata is copied (the
    rest is shared with ``obj``): it runs for every generated object on every tick."""
    meta = obj["metadata"]
    annotations = {**(meta.get("annotations") or {}), APPLIED_ANNOTATION: _digest(obj)}
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def covers(actual: Any, wanted: Any) -> bool:
    """Whether the stored ``actual`` already holds every field of ``wanted``: fields the API server or
    other managers added are ignored, lists must match item by item, null means "absent"."""
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return actual is None and not wanted
        return all(
            covers(actual.get(k), v) if k in actual else v in (None, {}, []) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        if not isinstance(actual, list):
            return actual is None and not wanted
        return len(actual) == len(wanted) and all(covers(a, w) for a, w in zip(actual, wanted, strict=True))
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return actual is wanted
    return bool(actual == wanted)


async def converge(objects: Objects, *wanted: Obj, whole: bool = True) -> int:
    """Apply each object only where the stored one differs from it, in the given order (referenced
    objects first); returns how many it wrote. The reads run concurrently.

    An idle reconcile then costs reads only. ``whole``: each object is everything canaryctl sets in it,
    so it is stamped with its digest and a field canaryctl stopped setting is drift as well. Partial
    writes (a selector in someone else's Service, a target's size) compare fields only.
    """
    objs = [stamped(obj) if whole else obj for obj in wanted]
    stored = await asyncio.gather(*(objects.get(*key(obj)) for obj in objs))
    covered = _covered.setdefault(objects, {})
    written = 0
    for obj, actual in zip(objs, stored, strict=True):
        seen = _seen(actual, obj) if whole else None
        if seen is not None and covered.get(key(obj)) == seen:
            continue
        if actual is None or not covers(actual, obj):
            await objects.apply(obj)
            written += 1
        elif seen is not None:
            if len(covered) >= MAX_COVERED:
                covered.clear()
            covered[key(obj)] = seen
    return written


def _seen(actual: Obj | None, wanted: Obj) -> tuple[int, str, str] | None:
    """What identifies a comparison of a stored object with a stamped wanted one, if it can be
    remembered: the stored copy's identity and resourceVersion (set by the API server on every
    change) and the wanted digest."""
    version = ((actual or {}).get("metadata") or {}).get("resourceVersion")
    if actual is None or not version:
        return None
    return id(actual), str(version), wanted["metadata"]["annotations"][APPLIED_ANNOTATION]
