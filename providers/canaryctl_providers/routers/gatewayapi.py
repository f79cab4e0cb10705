"""Gateway API: one HTTPRoute for the apex, attached to Gateways or (GAMMA, for a mesh) to the apex Service.

``spec.service.gatewayRefs`` set → Gateway parents with spec.service.hosts as hostnames; otherwise the
parent is the apex Service itself. Weights are backendRef weights, a header route is a first rule
sending matching requests to the canary, mirroring is a RequestMirror filter with ``percent``
(GEP-3171, standard channel since Gateway API v1.3). Before v1.3 the HTTPRoute CRD has no ``percent``
and the API server prunes it, so a 30% mirror would mirror every request: the router reads the installed
CRD before writing a partial mirror and refuses it there. Gateway API has no fault filter, so fault steps
are refused.
analysis.sessionAffinity adds Flagger's cookie rules; Set-Cookie rides on backendRef filters.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest, StringMatch
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects
from canaryctl_providers.routers import installed
from canaryctl_providers.routers.common import (
    Obj,
    ObjectRouter,
    StickyCookie,
    as_regex,
    cookie_matches,
    header_route_active,
    match_problem,
    merge_matches,
    metadata,
    stickiness,
)

GROUP: Final = "gateway.networking.k8s.io"
SET_COOKIE: Final = "Set-Cookie"
VERSIONS: Final = ("v1", "v1beta1")
MATCH_FIELDS: Final = ("headers", "uri", "method", "queryParams")
HTTPROUTE_CRD: Final = f"httproutes.{GROUP}"


def mirror_percent_versions(crd: Obj | None) -> frozenset[str] | None:
    """The served HTTPRoute versions whose schema keeps ``requestMirror.percent``; None without the CRD
    (writing the route will fail on its own)."""
    if crd is None:
        return None
    keeping = set()
    for version in (crd.get("spec") or {}).get("versions") or []:
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        for field in ("spec", "rules", "filters", "requestMirror"):
            schema = schema.get("properties", {}).get(field) or {}
            schema = schema.get("items", schema)
        if version.get("served") and "percent" in schema.get("properties", {}):
            keeping.add(version["name"])
    return frozenset(keeping)


def partial_mirror(routes: RouteState) -> bool:
    return 0 < routes.mirror_weight < 100


def _value_match(name: str, match: StringMatch) -> Obj:
    if match.exact is not None:
        return {"type": "Exact", "name": name, "value": match.exact}
    return {"type": "RegularExpression", "name": name, "value": as_regex(match)}


def _path_match(match: StringMatch) -> Obj:
    if match.exact is not None:
        return {"type": "Exact", "value": match.exact}
    if match.prefix is not None:
        return {"type": "PathPrefix", "value": match.prefix}
    return {"type": "RegularExpression", "value": as_regex(match)}


def route_match(match: HTTPMatchRequest) -> Obj:
    """An Istio HTTPMatchRequest as an HTTPRouteMatch (its fields are ANDed, as in Istio)."""
    out: Obj = {}
    if match.uri is not None:
        out["path"] = _path_match(match.uri)
    if match.headers:
        out["headers"] = [_value_match(name, value) for name, value in match.headers.items()]
    if match.query_params:
        out["queryParams"] = [_value_match(name, value) for name, value in match.query_params.items()]
    if match.method is not None and match.method.exact is not None:
        out["method"] = match.method.exact.upper()
    return out


def _parents(canary: Canary) -> Obj:
    service = canary.spec.service
    if service.gateway_refs:
        out: Obj = {"parentRefs": [ref.to_wire() for ref in service.gateway_refs]}
        if service.hosts:
            out["hostnames"] = list(service.hosts)
        return out
    parent = {"group": "", "kind": "Service", "name": canary.spec.apex_name, "port": service.port}
    return {"parentRefs": [parent]}


def _rule(canary: Canary, matches: list[HTTPMatchRequest], canary_weight: int) -> Obj:
    port = canary.spec.service.port
    rule: Obj = {}
    if matches:
        rule["matches"] = [route_match(m) for m in matches]
    rule["backendRefs"] = [
        {"name": canary.spec.side_service(True), "port": port, "weight": 100 - canary_weight},
        {"name": canary.spec.side_service(False), "port": port, "weight": canary_weight},
    ]
    rule |= _timeouts(canary)
    return rule


def _timeouts(canary: Canary) -> Obj:
    """Flagger's makeHTTPRouteTimeouts: spec.service.timeout for the whole request, backendTimeout for
    each request to a backend (a retry is a new one)."""
    service = canary.spec.service
    timeouts = {"request": service.timeout, "backendRequest": service.backend_timeout}
    given = {key: value for key, value in timeouts.items() if value}
    return {"timeouts": given} if given else {}


def _set_cookie(cookie: StickyCookie) -> Obj:
    """A ResponseHeaderModifier filter adding the cookie's Set-Cookie."""
    header = {"name": SET_COOKIE, "value": cookie.set_cookie}
    return {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [header]}}


def _sticky_rules(canary: Canary, routes: RouteState, default: Obj) -> list[Obj]:
    """Flagger's session affinity rules before the weighted one (as for Istio): backend filters of the
    weighted rule hand the cookies out, a rule per cookie pins its holders, an expired cookie is
    deleted from clients once the canary takes no traffic."""
    cookies = stickiness(canary, routes)
    if cookies is None:
        return []
    sticky: list[Obj] = []
    for cookie, primary in cookies.pinned():
        sticky.append(_rule(canary, cookie_matches(canary, cookie), 0 if primary else 100))
        backend = default["backendRefs"][0 if primary else 1]
        backend["filters"] = [*backend.get("filters", []), _set_cookie(cookie)]
    if cookies.expired is not None:
        expiring = _rule(canary, cookie_matches(canary, cookies.expired), routes.canary_weight)
        expiring["filters"] = [_set_cookie(cookies.expired)]
        sticky.append(expiring)
    return sticky


def http_route(canary: Canary, routes: RouteState, version: str = "v1") -> Obj:
    service_match = list(canary.spec.service.match or [])
    rules: list[Obj] = []
    default = _rule(canary, service_match, routes.canary_weight)
    if routes.mirror_weight:
        mirror = {
            "backendRef": {"name": canary.spec.side_service(False), "port": canary.spec.service.port},
            "percent": routes.mirror_weight,
        }
        default["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    sticky = _sticky_rules(canary, routes, default)
    if header_route_active(routes):
        ab = _rule(canary, merge_matches(routes.match, service_match), 100)
        cookies = stickiness(canary, routes)
        if cookies is not None and cookies.canary is not None:
            ab["backendRefs"][1]["filters"] = [_set_cookie(cookies.canary)]
        rules.append(ab)
    rules += [*sticky, default]
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "HTTPRoute",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": {**_parents(canary), "rules": rules},
    }


def desired(canary: Canary, routes: RouteState, version: str = "v1") -> list[Obj]:
    return [http_route(canary, routes, version)]


class GatewayApiRouter(ObjectRouter):
    """``gatewayapi`` and ``gatewayapi:v1`` write v1; ``gatewayapi:v1beta1`` the same route as v1beta1."""

    session_affinity = True

    def __init__(self, objects: Objects, version: str = "v1") -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown Gateway API version {version!r}; use one of {', '.join(VERSIONS)}")
        super().__init__(objects)
        self.version = version
        self.name = f"gatewayapi:{version}"

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults (Gateway API has no fault filter)"
        if partial_mirror(routes):  # known once apply has read the CRD (cached per cluster)
            known, versions = installed.cached(self.objects, HTTPROUTE_CRD, mirror_percent_versions)
            if known and versions is not None and self.version not in versions:
                return (
                    f"router {self.name} cannot mirror {routes.mirror_weight}% of requests: the installed "
                    f"HTTPRoute CRD has no requestMirror.percent (Gateway API before v1.3), so every request "
                    f"would be mirrored; upgrade Gateway API or mirror 100%"
                )
        return match_problem(self.name, routes.match, MATCH_FIELDS)

    async def apply(self, canary: Canary, routes: RouteState) -> None:
        if partial_mirror(routes):
            await installed.crd_fact(self.objects, HTTPROUTE_CRD, mirror_percent_versions)
        await super().apply(canary, routes)

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return desired(canary, routes, self.version)
