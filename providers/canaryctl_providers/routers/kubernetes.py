"""Blue/green without a mesh: point the apex Service's selector at the primary or the canary pods.

A ClusterIP Service balances over its endpoints and nothing else, so only canary weight 0 (primary)
and 100 (canary) are expressible; partial weights, header routes, mirroring and faults are refused.
The selector is copied from ``<apex>-primary``/``<apex>-canary``, which the workloads side creates
with the right pod labels, so this router need not know the target's selector label.
"""

from __future__ import annotations

from collections.abc import Mapping

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj, ObjectRouter, namespace, side_selector


def desired(canary: Canary, routes: RouteState, selector: Mapping[str, str]) -> list[Obj]:
    """Only the selector: the apex Service itself (ports, owner) belongs to the workloads side."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": canary.spec.apex_name, "namespace": namespace(canary)},
            "spec": {"selector": dict(selector)},
        }
    ]


class KubernetesRouter(ObjectRouter):
    name = "kubernetes"
    whole_objects = False  # only the selector of a Service the workloads side writes
    owns_apex_selector = True

    def unsupported(self, routes: RouteState) -> str | None:
        without_mesh = "a Service selects all primary or all canary pods"
        if routes.canary_weight not in (0, 100):
            return (
                f"router {self.name} cannot split traffic {routes.primary_weight}/{routes.canary_weight} "
                f"({without_mesh}); use blue/green or a mesh provider"
            )
        if routes.match:
            return f"router {self.name} cannot route by header ({without_mesh})"
        if routes.mirror_weight:
            return f"router {self.name} cannot mirror traffic ({without_mesh})"
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults ({without_mesh})"
        return None

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        selector = await side_selector(self.objects, self.name, canary, primary=routes.canary_weight == 0)
        return desired(canary, routes, selector)
