"""SMI TrafficSplit routers, v1alpha1 to v1alpha4 (also what ``osm``, ``linkerd`` with linkerd-smi and the
included mesh write).

v1alpha1 weights are Kubernetes Quantities, later versions integers; header routes need
``spec.matches`` → HTTPRouteGroup, which exists from v1alpha3. SMI has no mirror and no fault.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects
from canaryctl_providers.routers.common import (
    Obj,
    ObjectKey,
    ObjectRouter,
    as_regex,
    header_route_active,
    match_problem,
    metadata,
    namespace,
    split_with_match_problem,
)

VERSIONS: Final = ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
SPLIT_GROUP: Final = "split.smi-spec.io"
SPECS_GROUP: Final = "specs.smi-spec.io"
ROUTE_GROUP_KIND: Final = "HTTPRouteGroup"
# What an HTTPRouteGroup match can say: headers, pathRegex, methods.
MATCH_FIELDS: Final = ("headers", "uri", "method")


def supports_matches(version: str) -> bool:
    return version in ("v1alpha3", "v1alpha4")


def weight(version: str, percent: int) -> int | str:
    """v1alpha1 wants a Quantity: 90% is "900m", written in the API server's canonical form ("1", "0")
    so a re-apply is not a diff."""
    if version != "v1alpha1":
        return percent
    if percent in (0, 100):
        return str(percent // 100)
    return f"{percent * 10}m"


def http_match(match: HTTPMatchRequest, index: int) -> Obj:
    """HTTPRouteGroup header values are regexes (SMI semantics); Istio exact/prefix/suffix become ones.
    Headers are a list of one-entry maps: the SMI CRDs (and OSM's) type them so, and an API server
    would reject (or with preserved fields, a mesh misread) the map the Go SDK's docs show."""
    out: Obj = {"name": match.name or f"ab-{index}"}
    if match.headers:
        out["headers"] = [{name.lower(): as_regex(value)} for name, value in match.headers.items()]
    if match.uri is not None:
        out["pathRegex"] = as_regex(match.uri)
    if match.method is not None and match.method.exact is not None:
        out["methods"] = [match.method.exact]
    return out


def route_groups(canary: Canary, routes: RouteState, version: str) -> list[Obj]:
    """The HTTPRouteGroup of the header route, named after the apex; none when no header route is on."""
    if not header_route_active(routes):
        return []
    matches = [http_match(m, i) for i, m in enumerate(routes.match)]
    return [
        {
            "apiVersion": f"{SPECS_GROUP}/{version}",
            "kind": ROUTE_GROUP_KIND,
            "metadata": metadata(canary, canary.spec.apex_name),
            "spec": {"matches": matches},
        }
    ]


def traffic_split(canary: Canary, routes: RouteState, version: str) -> Obj:
    """With a header route the split only covers matching requests, which all go to the canary;
    SMI sends the rest to the apex service (the primary pods)."""
    ab = header_route_active(routes)
    canary_weight = 100 if ab else routes.canary_weight
    spec: Obj = {
        "service": canary.spec.apex_name,
        "backends": [
            {"service": canary.spec.side_service(True), "weight": weight(version, 100 - canary_weight)},
            {"service": canary.spec.side_service(False), "weight": weight(version, canary_weight)},
        ],
    }
    if ab:
        spec["matches"] = [{"kind": ROUTE_GROUP_KIND, "name": canary.spec.apex_name}]
    return {
        "apiVersion": f"{SPLIT_GROUP}/{version}",
        "kind": "TrafficSplit",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": spec,
    }


def desired(canary: Canary, routes: RouteState, version: str = "v1alpha4") -> list[Obj]:
    return [*route_groups(canary, routes, version), traffic_split(canary, routes, version)]


def routing_problem(router: str, routes: RouteState, version: str) -> str | None:
    """Weights and (from v1alpha3) header routes: the part every SMI-based router shares."""
    if routes.match and not supports_matches(version):
        return f"router {router} cannot route by header (SMI TrafficSplit {version} has no matches)"
    if routes.match:
        return split_with_match_problem(router, routes) or match_problem(router, routes.match, MATCH_FIELDS)
    return None


class SmiRouter(ObjectRouter):
    """Flagger's ``smi:<version>`` providers; ``osm`` is SMI v1alpha2 under its own name."""

    def __init__(self, objects: Objects, version: str, name: str | None = None) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown SMI version {version!r}; use one of {', '.join(VERSIONS)}")
        super().__init__(objects)
        self.version = version
        self.name = name or f"smi:{version}"

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.mirror_weight:
            return f"router {self.name} cannot mirror traffic (SMI has no mirroring)"
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults (SMI has no fault injection)"
        return routing_problem(self.name, routes, self.version)

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return desired(canary, routes, self.version)

    def managed(self, canary: Canary) -> list[ObjectKey]:
        if not supports_matches(self.version):
            return []
        group = (f"{SPECS_GROUP}/{self.version}", ROUTE_GROUP_KIND, namespace(canary), canary.spec.apex_name)
        return [group]
