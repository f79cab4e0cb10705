"""Metadata of the objects canaryctl writes for a Canary: namespace, owner, apex labels.

Routers and the operator's workloads both write objects a Canary owns, the same way.
"""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import API_VERSION, KNATIVE_PRIMARY_REVISION, KNATIVE_SERVING_API, Canary

Obj = dict[str, Any]


def namespace(canary: Canary) -> str:
    return canary.metadata.namespace or "default"


def knative_primary_revision(service: Obj) -> str | None:
    """The revision a Knative Service's primary side serves, as its annotation names it."""
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    return annotations.get(KNATIVE_PRIMARY_REVISION) or None


def knative_routing(canary: Canary, primary_revision: str | None, canary_weight: int = 0) -> Obj:
    """What canaryctl sets in a Knative Service, always together (one field manager writes them, so a
    write leaving one out would remove it): the primary-revision annotation and the traffic block, the
    latest revision taking ``canary_weight`` percent and the primary revision the rest. ``None``: no
    primary, all traffic to the latest revision (as without canaryctl). ``latestRevision: false`` is
    what Knative defaults a pinned revision to, written so a re-apply finds no drift."""
    traffic: list[Obj] = [
        {"latestRevision": True, "percent": 100 if primary_revision is None else canary_weight}
    ]
    if primary_revision is not None:
        traffic.append(
            {"revisionName": primary_revision, "latestRevision": False, "percent": 100 - canary_weight}
        )
    meta = {
        "name": canary.spec.target_ref.name,
        "namespace": namespace(canary),
        "annotations": {KNATIVE_PRIMARY_REVISION: primary_revision},  # null removes it
    }
    return {
        "apiVersion": KNATIVE_SERVING_API,
        "kind": "Service",
        "metadata": meta,
        "spec": {"traffic": traffic},
    }


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
