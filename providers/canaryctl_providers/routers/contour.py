"""Contour: an ``HTTPProxy`` named after the apex with weighted routes to ``<apex>-primary`` and
``<apex>-canary`` (Flagger's contour provider). A root HTTPProxy with the virtual host includes it.

As in Flagger: the route's prefix is ``spec.service.match[0].uri.prefix`` (else ``/``),
``spec.service.timeout`` becomes ``timeoutPolicy: {response, idle: 5m}``, ``spec.service.retries`` a
``retryPolicy``, and each service sets ``l5d-dst-override`` so a Linkerd-meshed Envoy keeps the split.
A header route is one route per ``analysis.match`` entry before the weighted route, sending everything
to the canary; Contour ANDs the conditions of a route and tries routes in order, so the entries are
ORed as in Istio. Header values: ``exact`` as ``exact``, the rest as an anchored ``regex`` (Flagger
writes ``contains`` for prefix and suffix, which matches anywhere in the value). No mirror, no faults.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest, StringMatch
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import (
    Obj,
    ObjectRouter,
    as_regex,
    header_route_active,
    match_problem,
    metadata,
    namespace,
)
from canaryctl_providers.routers.edge import mirror_or_fault_problem

API_VERSION: Final = "projectcontour.io/v1"
LINKERD_OVERRIDE: Final = "l5d-dst-override"
IDLE_TIMEOUT: Final = "5m"
# HTTPProxy's retryOn enum (Contour v1.33).
RETRY_ON: Final = frozenset(
    [
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ]
)


def _prefix(canary: Canary) -> str:
    match = canary.spec.service.match
    if match and match[0].uri is not None and match[0].uri.prefix:
        return match[0].uri.prefix
    return "/"


def _header(name: str, value: StringMatch) -> Obj:
    if value.exact is not None:
        return {"name": name, "exact": value.exact}
    return {"name": name, "regex": as_regex(value)}


def _conditions(canary: Canary, match: HTTPMatchRequest | None) -> list[Obj]:
    """The route prefix with the match's headers; only one condition of a route may carry a prefix."""
    headers = [_header(name, value) for name, value in ((match.headers or {}) if match else {}).items()]
    first: Obj = {"prefix": _prefix(canary)}
    if headers:
        first["header"] = headers[0]
    return [first, *({"header": header} for header in headers[1:])]


def _service(canary: Canary, primary: bool, weight: int) -> Obj:
    name, port = canary.spec.side_service(primary), canary.spec.service.port
    service: Obj = {"name": name, "port": port}
    if weight:  # Flagger leaves a zero weight out; Contour reads it as 0 when another service has one
        service["weight"] = weight
    override = {"name": LINKERD_OVERRIDE, "value": f"{name}.{namespace(canary)}.svc.cluster.local:{port}"}
    service["requestHeadersPolicy"] = {"set": [override]}
    return service


def _route(canary: Canary, match: HTTPMatchRequest | None, canary_weight: int) -> Obj:
    service = canary.spec.service
    route: Obj = {"conditions": _conditions(canary, match)}
    if service.timeout:
        route["timeoutPolicy"] = {"response": service.timeout, "idle": IDLE_TIMEOUT}
    if service.retries is not None:
        retries: Obj = {"count": service.retries.attempts}
        if service.retries.per_try_timeout:
            retries["perTryTimeout"] = service.retries.per_try_timeout
        if service.retries.retry_on:
            retries["retryOn"] = service.retries.retry_on.split(",")
        route["retryPolicy"] = retries
    route["services"] = [_service(canary, True, 100 - canary_weight), _service(canary, False, canary_weight)]
    return route


def http_proxy(canary: Canary, routes: RouteState) -> Obj:
    rules = [_route(canary, m, 100) for m in routes.match] if header_route_active(routes) else []
    rules.append(_route(canary, None, routes.canary_weight))
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPProxy",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": {"routes": rules},
    }


def service_problem(canary: Canary, router: str) -> str | None:
    """spec.service fields an HTTPProxy route cannot carry as written."""
    service = canary.spec.service
    match = service.match or []
    if len(match) > 1 or any(set(m.model_dump(exclude_none=True)) - {"uri"} for m in match):
        return f"spec.service.match: router {router} uses one match with uri.prefix (the route's prefix)"
    if match and (match[0].uri is None or match[0].uri.prefix is None):
        return f"spec.service.match[0].uri: router {router} can only use a prefix"
    retry_on = service.retries.retry_on if service.retries is not None else None
    unknown = sorted(set((retry_on or "").split(",")) - RETRY_ON) if retry_on else []
    if unknown:
        return f"spec.service.retries.retryOn: Contour does not retry on {', '.join(unknown)}"
    return None


class ContourRouter(ObjectRouter):
    name = "contour"

    def spec_problem(self, canary: Canary) -> str | None:
        return service_problem(canary, self.name)

    def unsupported(self, routes: RouteState) -> str | None:
        return mirror_or_fault_problem(
            self.name, routes, "not implemented for HTTPProxy", "Contour has no fault injection"
        ) or match_problem(self.name, routes.match, ("headers",))

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return [http_proxy(canary, routes)]
