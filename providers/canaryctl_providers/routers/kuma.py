"""Kuma: one MeshHTTPRoute (kuma.io/v1alpha1) splitting the apex service between primary and canary.

Flagger writes a TrafficRoute, a policy current Kuma (2.x) no longer serves; its replacement,
MeshHTTPRoute, carries the same split: for every client in the mesh (top-level ``targetRef`` Mesh),
requests to the apex's ``kuma.io/service`` (``<apex>_<namespace>_svc_<port>``, the names Flagger's
TrafficRoute used) go to ``<apex>-primary`` and ``<apex>-canary`` by weight. The policy lives in the
Canary's namespace (owned by it) and names its mesh with the ``kuma.io/mesh`` label, taken from the
Canary's ``kuma.io/mesh`` annotation as in Flagger (default ``default``).

Beyond Flagger's router: a header route is a rule with the A/B matches sending everything to the
canary (Kuma picks the most specific matching rule), and mirroring is a RequestMirror filter with a
percentage. Fault injection is a separate Kuma policy (MeshFaultInjection) this router does not write,
so fault steps are refused.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import (
    Obj,
    ObjectRouter,
    header_route_active,
    match_problem,
    merge_matches,
    metadata,
    namespace,
)
from canaryctl_providers.routers.gatewayapi import MATCH_FIELDS, route_match

API_VERSION: Final = "kuma.io/v1alpha1"
KIND: Final = "MeshHTTPRoute"
MESH_ANNOTATION: Final = "kuma.io/mesh"
MESH_LABEL: Final = "kuma.io/mesh"
DEFAULT_MESH: Final = "default"
# Kuma's rules need a match; this one takes every request.
EVERYTHING: Final = {"path": {"type": "PathPrefix", "value": "/"}}


def kuma_service(canary: Canary, service: str) -> str:
    """The ``kuma.io/service`` tag Kuma gives a Kubernetes Service's port."""
    return f"{service}_{namespace(canary)}_svc_{canary.spec.service.port}"


def mesh(canary: Canary) -> str:
    annotations = (canary.metadata.model_extra or {}).get("annotations") or {}
    return str(annotations.get(MESH_ANNOTATION) or DEFAULT_MESH)


def _backend(canary: Canary, primary: bool) -> Obj:
    return {"kind": "MeshService", "name": kuma_service(canary, canary.spec.side_service(primary))}


def _rule(canary: Canary, matches: list[HTTPMatchRequest], canary_weight: int) -> Obj:
    backends = [
        {**_backend(canary, True), "weight": 100 - canary_weight},
        {**_backend(canary, False), "weight": canary_weight},
    ]
    return {
        "matches": [route_match(m) for m in matches] or [EVERYTHING],
        "default": {"backendRefs": backends},
    }


def mesh_http_route(canary: Canary, routes: RouteState) -> Obj:
    service_match = list(canary.spec.service.match or [])
    default = _rule(canary, service_match, routes.canary_weight)
    if routes.mirror_weight:
        mirror = {"backendRef": _backend(canary, False), "percentage": routes.mirror_weight}
        default["default"]["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    rules = [default]
    if header_route_active(routes):
        rules.insert(0, _rule(canary, merge_matches(routes.match, service_match), 100))
    meta = metadata(canary, canary.spec.apex_name, apex=True)
    meta["labels"] = {**meta.get("labels", {}), MESH_LABEL: mesh(canary)}
    target = {"kind": "MeshService", "name": kuma_service(canary, canary.spec.apex_name)}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": target, "rules": rules}]},
    }


class KumaRouter(ObjectRouter):
    name = "kuma"

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults (Kuma's MeshFaultInjection is not written)"
        return match_problem(self.name, routes.match, MATCH_FIELDS)

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return [mesh_http_route(canary, routes)]
