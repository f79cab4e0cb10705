"""The included mesh: SMI TrafficSplit v1alpha4 + HTTPRouteGroup + a TrafficPolicy.

The TrafficPolicy (mesh.canaryctl.dev/v1alpha1) says what SMI cannot: mirror percentage, faults on
the canary backend only, spec.service.timeout and retries, and analysis.sessionAffinity's cookies. It
is always written (timeouts and retries hold outside rollouts too); mirror and fault appear in it only
while a step needs them.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import INCLUDED_MESH, Canary
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects
from canaryctl_mesh import translate
from canaryctl_mesh.api import MESH_API_VERSION, TRAFFIC_POLICY_KIND
from canaryctl_providers.routers import smi
from canaryctl_providers.routers.common import Obj, StickyCookie, metadata, stickiness

SMI_VERSION: Final = "v1alpha4"


def _cookie(cookie: StickyCookie) -> Obj:
    return {"name": cookie.name, "value": cookie.value, "setCookie": cookie.set_cookie}


def traffic_policy(canary: Canary, routes: RouteState) -> Obj:
    service = canary.spec.service
    canary_service = canary.spec.side_service(False)
    spec: Obj = {"service": canary.spec.apex_name}
    if routes.mirror_weight:
        spec["mirror"] = {"backend": canary_service, "percentage": routes.mirror_weight}
    if routes.fault is not None:
        spec["faults"] = [{"backend": canary_service, **routes.fault.to_wire()}]
    if service.timeout:
        spec["timeout"] = service.timeout
    if service.retries is not None:
        spec["retries"] = service.retries.to_wire()
    cookies = stickiness(canary, routes)
    if cookies is not None:
        pinned = ((cookies.canary, canary_service), (cookies.primary, canary.spec.side_service(True)))
        sticky = [{**_cookie(cookie), "backend": backend} for cookie, backend in pinned if cookie is not None]
        if cookies.expired is not None:
            sticky.append(_cookie(cookies.expired))
        if sticky:
            spec["sessionAffinity"] = sticky
    return {
        "apiVersion": MESH_API_VERSION,
        "kind": TRAFFIC_POLICY_KIND,
        "metadata": metadata(canary, canary.spec.apex_name),
        "spec": spec,
    }


def desired(canary: Canary, routes: RouteState) -> list[Obj]:
    """Route group and policy before the split that uses them, so the mesh never sees a dangling ref."""
    return [
        *smi.route_groups(canary, routes, SMI_VERSION),
        traffic_policy(canary, routes),
        smi.traffic_split(canary, routes, SMI_VERSION),
    ]


class CanaryctlRouter(smi.SmiRouter):
    """SMI v1alpha4 plus the policy, so mirror, fault steps and session affinity work too."""

    session_affinity = True

    def __init__(self, objects: Objects) -> None:
        super().__init__(objects, SMI_VERSION, INCLUDED_MESH)

    def unsupported(self, routes: RouteState) -> str | None:
        return smi.routing_problem(self.name, routes, SMI_VERSION)

    def spec_problem(self, canary: Canary) -> str | None:
        """A/B matches the mesh would refuse: every regex of the route group (exact, prefix and suffix
        values become regexes too) within the limits of the sidecars' Envoy, methods that are tokens."""
        for index, match in enumerate(canary.spec.effective_analysis.match or []):
            try:
                translate.http_match(smi.http_match(match, index), "canary")
            except ValueError as error:
                path = str(error).replace("pathRegex", "uri", 1)
                return f"spec.analysis.match[{index}].{path} (router {self.name})"
        return None

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return desired(canary, routes)
