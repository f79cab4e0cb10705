"""Linkerd (``linkerd``): the HTTPRoute current Linkerd routes by, and the TrafficSplit of linkerd-smi.

Linkerd 2.14 and later split traffic through HTTPRoutes attached to a Service (GAMMA) and no longer read
SMI objects; the linkerd-smi extension translates TrafficSplits for clusters that used Flagger's
``linkerd`` provider, which writes an SMI v1alpha1 TrafficSplit. canaryctl writes:

- an HTTPRoute ``policy.linkerd.io/v1beta3`` named after the apex, parent the apex Service (or
  ``spec.service.gatewayRefs``), the same rules the ``gatewayapi`` router writes: weighted backendRefs to
  ``<apex>-primary`` and ``<apex>-canary``, a header route as a first rule to the canary, timeouts;
- when linkerd-smi is installed (its TrafficSplit CRD exists), Flagger's TrafficSplit v1alpha1 with the
  same weights, so a cluster still routing by it routes alike. Linkerd lets an HTTPRoute on a Service
  win over what linkerd-smi derives, so a header route (which v1alpha1 cannot say) still holds.

Linkerd's HTTPRoute has no mirror filter and Linkerd no fault injection: both are refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from canaryctl.api.models import Canary
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import installed, smi
from canaryctl_providers.routers.common import Obj, ObjectRouter, match_problem
from canaryctl_providers.routers.gatewayapi import MATCH_FIELDS, http_route

API_VERSION: Final = "policy.linkerd.io/v1beta3"
SMI_VERSION: Final = "v1alpha1"
TRAFFIC_SPLIT_CRD: Final = f"trafficsplits.{smi.SPLIT_GROUP}"


def serves_v1alpha1(crd: Obj | None) -> bool:
    """Whether the TrafficSplit CRD is installed and serves v1alpha1 (linkerd-smi does)."""
    versions = ((crd or {}).get("spec") or {}).get("versions") or []
    return any(v.get("name") == SMI_VERSION and v.get("served") for v in versions)


def desired(canary: Canary, routes: RouteState, smi_installed: bool) -> list[Obj]:
    route = http_route(canary, routes)
    route["apiVersion"] = API_VERSION
    if not smi_installed:
        return [route]
    split = smi.traffic_split(canary, replace(routes, match=()), SMI_VERSION)  # weights only
    return [route, split]


class LinkerdRouter(ObjectRouter):
    name = "linkerd"

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.mirror_weight:
            return f"router {self.name} cannot mirror traffic (Linkerd's HTTPRoute has no mirror filter)"
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults (Linkerd has no fault injection)"
        return match_problem(self.name, routes.match, MATCH_FIELDS)

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        smi_installed = await installed.crd_fact(self.objects, TRAFFIC_SPLIT_CRD, serves_v1alpha1)
        return desired(canary, routes, smi_installed)
