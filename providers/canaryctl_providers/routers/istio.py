"""Istio: a VirtualService for the apex plus DestinationRules for ``<apex>-primary``/``<apex>-canary``.

Flagger-shaped: hosts are spec.service.hosts plus the apex, gateways spec.service.gateways or
``mesh``; rewrite, timeout, retries, corsPolicy and headers are copied onto every HTTP route. A header
route is a first HTTP route (A/B match ANDed with spec.service.match) sending everything to the canary.
analysis.sessionAffinity adds Flagger's cookie routes before the weighted one (see ``_sticky_routes``);
the header route hands out the canary's cookie too, so an A/B client stays on the canary.

Istio applies a fault to a whole HTTP route, not to one destination of it, so a canary-only fault is
written only where every route reaching the canary sends all its traffic there: the header route, or
the default route at canary weight 100. A fault during a partial weight cannot be expressed and is
refused by ``unsupported``.
"""

from __future__ import annotations

import copy
from typing import Final

from canaryctl.api.models import Canary, FaultStatus
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import (
    Obj,
    ObjectRouter,
    StickyCookie,
    cookie_matches,
    header_route_active,
    merge_matches,
    metadata,
    stickiness,
)

API_VERSION: Final = "networking.istio.io/v1beta1"
SET_COOKIE: Final = "Set-Cookie"


def _fault(fault: FaultStatus) -> Obj:
    out: Obj = {}
    delay, abort = fault.delay, fault.abort
    if delay is not None:
        out["delay"] = {"fixedDelay": delay.fixed_delay, "percentage": {"value": delay.percentage}}
    if abort is not None:
        out["abort"] = {"httpStatus": abort.http_status, "percentage": {"value": abort.percentage}}
    return out


def _destination(canary: Canary, primary: bool, weight: int) -> Obj:
    service = canary.spec.service
    destination: Obj = {"host": canary.spec.side_service(primary)}
    # With portDiscovery the Services have several ports: a route from the mesh applies to each, a
    # gateway's (or a delegate's) must name one (Flagger's makeDestination).
    gateways = service.gateways or []
    from_gateway = bool(gateways) and gateways[0] != "mesh"
    if not service.port_discovery or from_gateway or service.delegation:
        destination["port"] = {"number": service.port}
    return {"destination": destination, "weight": weight}


def _http_route(canary: Canary, match: list[Obj], canary_weight: int) -> Obj:
    """One HTTP route with spec.service's passthrough fields, in Flagger's field order."""
    service = canary.spec.service
    route: Obj = {}
    if match:
        route["match"] = match
    if service.rewrite is not None:
        # Flagger's GetIstioRewrite: ``type`` is Gateway API's path modifier, not an Istio field.
        rewrite = service.rewrite.model_dump(by_alias=True, exclude_none=True, include={"uri", "authority"})
        if rewrite:
            route["rewrite"] = rewrite
    if service.timeout:
        route["timeout"] = service.timeout
    if service.retries is not None:
        route["retries"] = service.retries.to_wire()
    if service.cors_policy is not None:
        route["corsPolicy"] = service.cors_policy.to_wire()
    if service.headers is not None:
        route["headers"] = service.headers.to_wire()
    route["route"] = [
        _destination(canary, True, 100 - canary_weight),
        _destination(canary, False, canary_weight),
    ]
    return route


def _hosts_and_gateways(canary: Canary) -> Obj:
    service = canary.spec.service
    if service.delegation:
        return {}  # a delegate VirtualService must have neither
    hosts = list(service.hosts or [])
    if canary.spec.apex_name not in hosts and "*" not in hosts:
        hosts.append(canary.spec.apex_name)
    return {"hosts": hosts, "gateways": list(service.gateways or ["mesh"])}


def _set_cookie(target: Obj, cookie: StickyCookie) -> None:
    """Add the cookie's Set-Cookie to the responses of a route or a destination (``headers.response``)."""
    headers = target.setdefault("headers", {})
    response = headers.setdefault("response", {})
    response["add"] = {**(response.get("add") or {}), SET_COOKIE: cookie.set_cookie}


def _sticky_routes(canary: Canary, routes: RouteState, default: Obj) -> list[Obj]:
    """Flagger's session affinity rules before the weighted one: a client with the canary's cookie stays
    on the canary (with primaryCookieName, one with the primary's on the primary); the weighted route
    (and a header route) hand the cookies out; after the rollout the cookie is deleted from clients."""
    cookies = stickiness(canary, routes)
    if cookies is None:
        return []
    sticky: list[Obj] = []
    for cookie, primary in cookies.pinned():
        match = [m.to_wire() for m in cookie_matches(canary, cookie)]
        sticky.append(_http_route(canary, match, 0 if primary else 100))
        _set_cookie(default["route"][0 if primary else 1], cookie)
    if cookies.expired is not None:
        match = [m.to_wire() for m in cookie_matches(canary, cookies.expired)]
        expiring = {**copy.deepcopy(default), "match": match}
        _set_cookie(expiring, cookies.expired)
        sticky.append(expiring)
    return sticky


def virtual_service(canary: Canary, routes: RouteState) -> Obj:
    service_match = [m.to_wire() for m in canary.spec.service.match or []]
    http: list[Obj] = []
    default = _http_route(canary, service_match, routes.canary_weight)
    if routes.mirror_weight:
        default["mirror"] = {"host": canary.spec.side_service(False)}
        default["mirrorPercentage"] = {"value": routes.mirror_weight}
    if routes.fault is not None and routes.canary_weight == 100:
        default["fault"] = _fault(routes.fault)
    sticky = _sticky_routes(canary, routes, default)
    if header_route_active(routes):
        ab_match = [m.to_wire() for m in merge_matches(routes.match, canary.spec.service.match)]
        ab = _http_route(canary, ab_match, 100)
        if routes.fault is not None:
            ab["fault"] = _fault(routes.fault)
        cookies = stickiness(canary, routes)
        if cookies is not None and cookies.canary is not None:
            _set_cookie(ab["route"][1], cookies.canary)
        http.append(ab)
    http += [*sticky, default]
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": {**_hosts_and_gateways(canary), "http": http},
    }


def destination_rule(canary: Canary, primary: bool) -> Obj:
    host = canary.spec.side_service(primary)
    spec: Obj = {"host": host}
    if canary.spec.service.traffic_policy is not None:
        spec["trafficPolicy"] = canary.spec.service.traffic_policy.to_wire()
    return {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": metadata(canary, host),
        "spec": spec,
    }


def desired(canary: Canary, routes: RouteState) -> list[Obj]:
    """DestinationRules first: the VirtualService routes to their hosts."""
    return [destination_rule(canary, True), destination_rule(canary, False), virtual_service(canary, routes)]


def _has_suffix(value: object) -> bool:
    if isinstance(value, dict):
        return "suffix" in value or any(_has_suffix(v) for v in value.values())
    return False


class IstioRouter(ObjectRouter):
    name = "istio"
    session_affinity = True

    def unsupported(self, routes: RouteState) -> str | None:
        if any(_has_suffix(m.model_dump(exclude_none=True)) for m in routes.match):
            return f"router {self.name} cannot match a suffix (Istio StringMatch has exact, prefix, regex)"
        if routes.fault is not None and 0 < routes.canary_weight < 100:
            return (
                f"router {self.name} cannot fault only the canary's share of a weighted route "
                f"(canary weight {routes.canary_weight}%): Istio faults apply to a whole HTTP route; "
                "fault at canary weight 100 or on a header route"
            )
        return None

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return desired(canary, routes)
