"""Metadata of the objects canaryctl writes for a Canary: namespace, owner, apex labels.

Routers and the operator's workloads both write objects a Canary owns, the same way.
"""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import API_VERSION, Canary

Obj = dict[str, Any]


def namespace(canary: Canary) -> str:
    return canary.metadata.namespace or "default"


def owner_references(canary: Canary) -> list[Obj]:
    """The Canary as controller owner, so deleting it garbage-collects what routers wrote.

    The API server rejects an ownerReference without a uid, so none is written when the Canary has
    not been stored yet (lint, local runs).
    """
    uid = (canary.metadata.model_extra or {}).get("uid")
    if not uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "Canary",
            "name": canary.metadata.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def metadata(canary: Canary, name: str, *, apex: bool = False) -> Obj:
    """Name, namespace and owner; ``apex`` adds spec.service.apex labels/annotations (Flagger does so
    on the apex routing object)."""
    meta: Obj = {"name": name, "namespace": namespace(canary)}
    custom = canary.spec.service.apex if apex else None
    if custom is not None and custom.labels:
        meta["labels"] = dict(custom.labels)
    if custom is not None and custom.annotations:
        meta["annotations"] = dict(custom.annotations)
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    return meta
