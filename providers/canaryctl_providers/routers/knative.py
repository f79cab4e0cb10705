"""Knative Serving (``knative``): the traffic block of the target Knative Service, as Flagger writes it.

A Knative Canary targets a ``serving.knative.dev`` Service and has no ``spec.service``: Knative routes
to its own revisions. The canary is the latest revision (``latestRevision: true``), the primary the
revision the Service's ``flagger.app/primary-revision`` annotation names (set by the operator on
initialization and promotion):

    traffic:
    - {latestRevision: true, percent: <canary weight>}
    - {revisionName: <primary revision>, latestRevision: false, percent: <primary weight>}

Only ``spec.traffic`` and that annotation are written (server-side apply of those fields), the rest of
the user's Service is theirs. A traffic block splits by percent only: header routes, mirrors and
faults are refused.
"""

from __future__ import annotations

from canaryctl.api.models import KNATIVE_SERVING_API, Canary
from canaryctl.api.owned import knative_primary_revision, knative_routing
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj, ObjectRouter, namespace
from canaryctl_providers.routers.edge import weights_only_problem


def desired(canary: Canary, routes: RouteState, primary_revision: str) -> list[Obj]:
    """The annotation (as read) and the traffic block: canaryctl writes both together."""
    return [knative_routing(canary, primary_revision, routes.canary_weight)]


class KnativeRouter(ObjectRouter):
    name = "knative"
    whole_objects = False  # the user's Service: canaryctl sets its traffic block only

    def unsupported(self, routes: RouteState) -> str | None:
        return weights_only_problem(self.name, routes, "a Knative traffic block splits by percent only")

    def spec_problem(self, canary: Canary) -> str | None:
        if not canary.spec.target_ref.knative:
            return (
                f"spec.targetRef: router {self.name} needs a Knative Service "
                "(apiVersion serving.knative.dev/v1, kind Service)"
            )
        return None

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        name = canary.spec.target_ref.name
        found = await self.objects.get(KNATIVE_SERVING_API, "Service", namespace(canary), name)
        if found is None:
            raise LookupError(f"router {self.name}: Knative Service {namespace(canary)}/{name} not found")
        primary = knative_primary_revision(found)
        if primary is None:
            raise LookupError(
                f"router {self.name}: Knative Service {namespace(canary)}/{name} names no primary revision "
                "yet (set on initialization)"
            )
        return desired(canary, routes, primary)
