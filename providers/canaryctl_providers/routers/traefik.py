"""Traefik: a ``TraefikService`` named after the apex whose weighted round robin sends traffic to
``<apex>-primary`` and ``<apex>-canary`` (Flagger's traefik provider). The user's IngressRoute routes
to it (``services: [{name: <apex>, kind: TraefikService}]``).

As in Flagger, a side taking no traffic is left out of the list. Flagger keeps the primary at 100% of
the canary (its zero weight omitted, which Traefik reads as weight 1); here the primary is left out as
well, so promotion at weight 100 sends the canary everything. Header routes, mirroring and faults are
refused, as Flagger's traefik router has none.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj, ObjectRouter, metadata, namespace
from canaryctl_providers.routers.edge import weights_only_problem

API_VERSION: Final = "traefik.io/v1alpha1"


def traefik_service(canary: Canary, routes: RouteState) -> Obj:
    weights = ((True, routes.primary_weight), (False, routes.canary_weight))
    services = [
        {
            "name": canary.spec.side_service(primary),
            "namespace": namespace(canary),
            "port": canary.spec.service.port,
            "weight": weight,
        }
        for primary, weight in weights
        if weight > 0
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "TraefikService",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": {"weighted": {"services": services}},
    }


class TraefikRouter(ObjectRouter):
    name = "traefik"

    def unsupported(self, routes: RouteState) -> str | None:
        return weights_only_problem(self.name, routes, "a TraefikService splits by weight only")

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return [traefik_service(canary, routes)]
