"""JSON merge patches that really turn one document into another.

A merge patch only removes what it names with ``null``, so sending the new document alone leaves keys
the old one had (a ``heldSince`` that was cleared, an annotation dropped from a pod template). These
patches name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 patch from ``old`` to ``new``: changed keys, nested dicts recursed, removed keys null."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch
