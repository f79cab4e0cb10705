"""Skipper: ``<ingress>-canary``, a copy of the Ingress named by ``spec.ingressRef`` whose apex paths go to
``<apex>-primary`` with a second path for ``<apex>-canary``, weighted by Skipper's
``zalando.org/backend-weights`` annotation (Flagger's skipper provider).

The copy's routes win over the user's Ingress through the ``Weight(100)`` predicate while the canary
takes traffic; at canary weight 0 the ``False()`` predicate switches them off and the user's Ingress
serves again. Flagger's skipper router has no A/B testing; mirror and faults neither.
"""

from __future__ import annotations

import copy
import json
from typing import Final

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj
from canaryctl_providers.routers.edge import (
    INGRESS_API,
    IngressCopyRouter,
    copied_metadata,
    ingress_copy,
    ingress_name,
    weights_only_problem,
)

PREDICATE: Final = "zalando.org/skipper-predicate"
BACKEND_WEIGHTS: Final = "zalando.org/backend-weights"
ROUTE_WEIGHT: Final = "Weight(100)"
ROUTE_OFF: Final = "False()"


def predicate(user: str, canary_weight: int) -> str:
    """The user's predicates behind Weight(100) (or False() at weight 0), as Flagger's insertPredicate."""
    rest = [p.strip() for p in user.split("&&") if p.strip() not in ("", ROUTE_WEIGHT, ROUTE_OFF)]
    return " && ".join([ROUTE_OFF if canary_weight == 0 else ROUTE_WEIGHT, *rest])


class SkipperRouter(IngressCopyRouter):
    name = "skipper"

    @staticmethod
    def canary_ingress(canary: Canary, source: Obj, routes: RouteState) -> Obj:
        """``source`` with each apex path sent to ``<apex>-primary`` and a copy of it to ``<apex>-canary``
        right after the paths of its rule, weighted by ``zalando.org/backend-weights``."""
        spec, found = ingress_copy(canary, source)
        primary, side = canary.spec.side_service(True), canary.spec.side_service(False)
        for paths, path in found:
            path["backend"]["service"]["name"] = primary
            canary_path = copy.deepcopy(path)
            canary_path["backend"]["service"]["name"] = side
            paths.append(canary_path)
        weights = {primary: routes.primary_weight, side: routes.canary_weight}
        user = ((source.get("metadata") or {}).get("annotations") or {}).get(PREDICATE, "")
        annotations = {
            BACKEND_WEIGHTS: json.dumps(weights, sort_keys=True, separators=(",", ":")),
            PREDICATE: predicate(user, routes.canary_weight),
        }
        meta = copied_metadata(canary, source, f"{ingress_name(canary)}-canary", add=annotations)
        return {"apiVersion": INGRESS_API, "kind": "Ingress", "metadata": meta, "spec": spec}

    def unsupported(self, routes: RouteState) -> str | None:
        return weights_only_problem(self.name, routes, "the canary Ingress splits by backend weights only")
