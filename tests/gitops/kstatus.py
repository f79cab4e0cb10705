"""kstatus's reading of an object, transcribed from sigs.k8s.io/cli-utils pkg/kstatus/status (generic.go
and the Ready fallback its README describes), and the status-condition rules Flux's controllers keep
(fluxcd/pkg runtime/conditions/check, the FAIL rules that need no per-condition observedGeneration).

kstatus is what Flux's health checks and ``kustomize``/``kpt`` waits run on custom resources.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def compute(obj: Obj) -> tuple[str, str]:
    """(status, message) as kstatus's Compute gives it for a resource without a type-specific rule."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, f"generation is {generation}, but latest observed generation is {observed}"
    for condition in status.get("conditions") or []:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return IN_PROGRESS, condition.get("message", "")
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return FAILED, condition.get("message", "")
    ready = _conditions(obj).get("Ready")
    if ready is not None and ready["status"] == "False":
        return IN_PROGRESS, ready.get("message", "")
    return CURRENT, "Resource is current"


def flux_violations(obj: Obj) -> list[str]:
    """The Flux condition rules this object breaks (empty: none)."""
    conditions = _conditions(obj)
    ready = conditions.get("Ready")
    problems = []
    if ready is None:
        problems.append("FAIL0002: Ready condition must always be present")
        return problems
    abnormal = ("Reconciling", "Stalled", "InvalidSpec")
    negative = [t for t in abnormal if conditions.get(t, {}).get("status") == "True"]
    if ready["status"] == "True" and negative:
        problems.append(f"FAIL0001: negative polarity condition True while Ready: {negative}")
    for kind in ("Reconciling", "Stalled"):
        if conditions.get(kind, {}).get("status") == "True" and ready["status"] != "False":
            problems.append(f"FAIL0003/4: Ready must be False when {kind} is True")
    if "Reconciling" in conditions and "Stalled" in conditions:
        problems.append("FAIL0005: only one of Reconciling or Stalled may be present")
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and observed is not None and observed > generation:
        problems.append("FAIL0006: observedGeneration is greater than generation")
    return problems
