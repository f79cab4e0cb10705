"""APISIX: ``<route>-<apex>-canary``, a copy of the ApisixRoute named by ``spec.routeRef`` holding only
its HTTP route to the apex Service, with weighted backends ``<apex>-primary`` and ``<apex>-canary``
(Flagger's apisix provider).

The copy's route has priority 10000, so APISIX matches it before the user's route for the same
path; the canary backend takes the primary backend's port, resolveGranularity and subset. As in
Flagger, the route must have exactly one backend, the apex Service. Header routes, mirroring and
faults are refused (Flagger's apisix router has none).
"""

from __future__ import annotations

import copy
from typing import Final

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj, ObjectRouter, namespace
from canaryctl_providers.routers.edge import (
    copied_metadata,
    reference_problem,
    referenced,
    service_match_problem,
    weights_only_problem,
)

API_VERSION: Final = "apisix.apache.org/v2"
PRIORITY: Final = 10000
# What the canary backend takes over from the primary's.
SHARED: Final = ("servicePort", "resolveGranularity", "subset")


def route_name(canary: Canary) -> str:
    assert canary.spec.route_ref is not None  # spec_problem says so first
    return canary.spec.route_ref.name


def _apex_route(canary: Canary, source: Obj) -> Obj:
    apex = canary.spec.apex_name
    where = f"ApisixRoute {namespace(canary)}/{route_name(canary)}"
    for route in (source.get("spec") or {}).get("http") or []:
        backends = route.get("backends") or []
        if any(backend.get("serviceName") == apex for backend in backends):
            if len(backends) != 1:
                raise LookupError(
                    f"{where}: route {route.get('name')!r} must have one backend, Service {apex!r}"
                )
            return copy.deepcopy(route)
    raise LookupError(f"{where} has no HTTP route with backend Service {apex!r}")


def canary_route(canary: Canary, source: Obj, routes: RouteState) -> Obj:
    """The canary ApisixRoute for ``source`` (the user's) in the routing state ``routes``."""
    route = _apex_route(canary, source)
    (primary,) = route["backends"]
    primary |= {"serviceName": canary.spec.side_service(True), "weight": routes.primary_weight}
    side = {k: copy.deepcopy(primary[k]) for k in SHARED if k in primary}
    side |= {"serviceName": canary.spec.side_service(False), "weight": routes.canary_weight}
    route |= {"priority": PRIORITY, "backends": [primary, side]}
    name = f"{route_name(canary)}-{canary.spec.apex_name}-canary"
    spec = copy.deepcopy(source.get("spec") or {}) | {"http": [route]}
    return {
        "apiVersion": API_VERSION,
        "kind": "ApisixRoute",
        "metadata": copied_metadata(canary, source, name),
        "spec": spec,
    }


class ApisixRouter(ObjectRouter):
    name = "apisix"

    def spec_problem(self, canary: Canary) -> str | None:
        ref = canary.spec.route_ref
        return reference_problem(
            canary, "routeRef", ref, self.name, API_VERSION, "ApisixRoute"
        ) or service_match_problem(canary, self.name, "ApisixRoute")

    def unsupported(self, routes: RouteState) -> str | None:
        return weights_only_problem(
            self.name, routes, "the canary ApisixRoute splits by backend weights only"
        )

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        source = await referenced(self.objects, canary, API_VERSION, "ApisixRoute", route_name(canary))
        return [canary_route(canary, source, routes)]
