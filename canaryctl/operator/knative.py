"""The Workloads port for a Knative Service target (Flagger's KnativeController).

Knative keeps every revision of a Service, so there is nothing to copy: the primary is the revision
named by the Service's ``flagger.app/primary-revision`` annotation (Flagger's, so a migrated Service
keeps its primary) and the canary is ``status.latestCreatedRevisionName``. The revision canaryctl tracks
is that name itself, so the Canary's ``status.lastAppliedSpec`` names the revision under analysis, which
the builtin metrics select as ``{{ route }}``. INITIALIZE and PROMOTE make the latest revision the
primary and give it all traffic (Flagger's Initialize); the ``knative`` router sets the split from
then on. Knative scales revisions itself, so the scale operations do nothing; REVERT (revertOnDeletion)
sends all traffic to the latest revision and drops the annotation.
"""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import KNATIVE_PRIMARY_REVISION, KNATIVE_SERVING_API, Canary
from canaryctl.api.owned import knative_primary_revision, knative_routing, namespace
from canaryctl.drift import converge
from canaryctl.engine.types import Readiness, WorkloadOp
from canaryctl.ports import Objects, Revision

Obj = dict[str, Any]


class KnativeTargetError(LookupError):
    """The Knative Service is missing or has no revision yet."""


def latest_revision(service: Obj) -> str:
    name = ((service.get("status") or {}).get("latestCreatedRevisionName")) or ""
    if not name:
        meta = service["metadata"]
        raise KnativeTargetError(
            f"Knative Service {meta.get('namespace')}/{meta['name']} has created no revision yet"
        )
    return str(name)


def _revision_readiness(revision: Obj | None, name: str) -> Readiness:
    """A Revision is ready when Knative says so: its Ready condition."""
    if revision is None:
        return Readiness(False, f"Knative Revision {name} not found")
    conditions = (revision.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return Readiness(True)
    reason = (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition yet"
    return Readiness(False, f"Knative Revision {name} is not ready: {reason}")


class KnativeWorkloads:
    """Implements the Workloads port for ``serving.knative.dev`` Service targets."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    async def service(self, canary: Canary) -> Obj:
        ref = canary.spec.target_ref
        found = await self.objects.get(KNATIVE_SERVING_API, "Service", namespace(canary), ref.name)
        if found is None:
            raise KnativeTargetError(f"Knative Service {namespace(canary)}/{ref.name} not found")
        return found

    async def revision(self, canary: Canary) -> Revision:
        return Revision(latest_revision(await self.service(canary)), {})

    async def readiness(self, canary: Canary, primary: bool) -> Readiness:
        service = await self.service(canary)
        name = knative_primary_revision(service) if primary else latest_revision(service)
        if name is None:
            return Readiness(False, f"annotation {KNATIVE_PRIMARY_REVISION} not set yet")
        found = await self.objects.get(KNATIVE_SERVING_API, "Revision", namespace(canary), name)
        return _revision_readiness(found, name)

    async def apply(self, canary: Canary, op: WorkloadOp) -> None:
        """Only the annotation and the traffic block of the user's Service are written."""
        if op in (WorkloadOp.INITIALIZE, WorkloadOp.PROMOTE):
            latest = latest_revision(await self.service(canary))
            await converge(self.objects, knative_routing(canary, latest), whole=False)
        elif op is WorkloadOp.REVERT:
            await converge(self.objects, knative_routing(canary, None), whole=False)
