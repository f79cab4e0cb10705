"""Gloo Edge: a ``RouteTable`` named after the apex, which the user's VirtualService delegates to, with
weighted destinations to two ``Upstream``s canaryctl writes for ``<apex>-primary`` and
``<apex>-canary`` (``<namespace>-<apex>-primaryupstream-<port>`` and ``...-canaryupstream-<port>``),
as Flagger's gloo provider does. ``spec.upstreamRef`` names an Upstream whose TLS, circuit breaker,
connection, load balancer and HTTP/2 settings both copy; a TLS ``secretRef`` it carries must be in the
Canary's namespace, and an Upstream of another namespace may not pass on TLS settings at all (the copy
would otherwise present another namespace's credentials).

A header route is a first route whose matchers (one per ``analysis.match`` entry; Gloo ORs matchers)
send matching requests to the canary, before the weighted route. Flagger puts the matchers on its only
route instead, which leaves requests without the header unrouted by the table during A/B testing.
Routes inherit the VirtualService's path matchers. No mirror, no faults.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest, StringMatch
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects
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

GATEWAY_API: Final = "gateway.solo.io/v1"
GLOO_API: Final = "gloo.solo.io/v1"
# What Flagger copies from spec.upstreamRef (its httpProxyHostName is a typo Gloo's schema prunes).
COPIED: Final = (
    "sslConfig",
    "circuitBreakers",
    "connectionConfig",
    "loadBalancerConfig",
    "useHttp2",
    "initialStreamWindowSize",
    "initialConnectionWindowSize",
    "httpProxyHostname",
)


def upstream_name(canary: Canary, primary: bool) -> str:
    side = "primary" if primary else "canary"
    return f"{namespace(canary)}-{canary.spec.apex_name}-{side}upstream-{canary.spec.service.port}"


def upstream(canary: Canary, primary: bool, selector: Mapping[str, str], config: Obj | None) -> Obj:
    """A Kubernetes Upstream for one side's Service, with the settings of the config Upstream."""
    kube: Obj = {
        "serviceName": canary.spec.side_service(primary),
        "serviceNamespace": namespace(canary),
        "servicePort": canary.spec.service.port,
    }
    if selector:
        kube["selector"] = dict(selector)
    settings = (config or {}).get("spec") or {}
    spec: Obj = {"kube": kube} | {k: copy.deepcopy(settings[k]) for k in COPIED if k in settings}
    return {
        "apiVersion": GLOO_API,
        "kind": "Upstream",
        "metadata": metadata(canary, upstream_name(canary, primary)),
        "spec": spec,
    }


def _header(name: str, value: StringMatch) -> Obj:
    if value.exact is not None:
        return {"name": name, "value": value.exact}
    return {"name": name, "value": as_regex(value), "regex": True}


def _matcher(match: HTTPMatchRequest) -> Obj:
    matcher: Obj = {}
    if match.headers:
        matcher["headers"] = [_header(name, value) for name, value in match.headers.items()]
    if match.method is not None and match.method.exact is not None:
        matcher["methods"] = [match.method.exact]
    return matcher


def _destination(canary: Canary, primary: bool, weight: int) -> Obj:
    ref = {"name": upstream_name(canary, primary), "namespace": namespace(canary)}
    destination: Obj = {"destination": {"upstream": ref}}
    if weight:  # as Flagger: a destination without a weight takes no traffic
        destination["weight"] = weight
    return destination


def _route(canary: Canary, matches: tuple[HTTPMatchRequest, ...], canary_weight: int) -> Obj:
    route: Obj = {"matchers": [_matcher(m) for m in matches]} if matches else {}
    destinations = [
        _destination(canary, True, 100 - canary_weight),
        _destination(canary, False, canary_weight),
    ]
    route["routeAction"] = {"multi": {"destinations": destinations}}
    route["inheritablePathMatchers"] = True
    return route


def route_table(canary: Canary, routes: RouteState) -> Obj:
    rules = [_route(canary, routes.match, 100)] if header_route_active(routes) else []
    rules.append(_route(canary, (), routes.canary_weight))
    return {
        "apiVersion": GATEWAY_API,
        "kind": "RouteTable",
        "metadata": metadata(canary, canary.spec.apex_name, apex=True),
        "spec": {"routes": rules},
    }


def secret_problem(canary: Canary, config: Obj) -> str | None:
    """Why the canary Upstreams may not copy ``config``'s TLS settings: they would present credentials
    of another namespace (a secretRef there, or any client certificate of an Upstream there)."""
    meta = config.get("metadata") or {}
    where = f"spec.upstreamRef: Upstream {meta.get('namespace')}/{meta.get('name')}"
    ssl = (config.get("spec") or {}).get("sslConfig") or {}
    if ssl and meta.get("namespace") != namespace(canary):
        return (
            f"{where} is in another namespace and has an sslConfig; a canary Upstream may only use TLS "
            f"credentials of its own namespace {namespace(canary)!r}"
        )
    ref = ssl.get("secretRef") or {}
    if ref.get("namespace") not in (None, namespace(canary)):
        return (
            f"{where} uses Secret {ref['namespace']}/{ref.get('name')}; a canary Upstream may only use "
            f"Secrets of its own namespace {namespace(canary)!r}"
        )
    return None


async def _selector(objects: Objects, canary: Canary, primary: bool) -> Mapping[str, str]:
    name = canary.spec.side_service(primary)
    found = await objects.get("v1", "Service", namespace(canary), name)
    if found is None:
        raise LookupError(f"Service {namespace(canary)}/{name} not found")
    selector: Mapping[str, str] = (found.get("spec") or {}).get("selector") or {}
    return selector


class GlooRouter(ObjectRouter):
    name = "gloo"

    def spec_problem(self, canary: Canary) -> str | None:
        ref = canary.spec.upstream_ref
        if ref is not None and (
            ref.kind not in (None, "Upstream") or ref.api_version not in (None, GLOO_API)
        ):
            return f"spec.upstreamRef: router {self.name} copies an Upstream ({GLOO_API})"
        return None

    def unsupported(self, routes: RouteState) -> str | None:
        return mirror_or_fault_problem(
            self.name, routes, "not implemented for Gloo routes", "not implemented for Gloo routes"
        ) or match_problem(self.name, routes.match, ("headers", "method"))

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        ref, config = canary.spec.upstream_ref, None
        if ref is not None:
            config = await self.objects.get(
                GLOO_API, "Upstream", ref.namespace or namespace(canary), ref.name
            )
            if config is None:
                raise LookupError(
                    f"spec.upstreamRef: Upstream {ref.namespace or namespace(canary)}/{ref.name} not found"
                )
            problem = secret_problem(canary, config)
            if problem is not None:
                raise ValueError(problem)
        upstreams = [
            upstream(canary, p, await _selector(self.objects, canary, p), config) for p in (True, False)
        ]
        return [*upstreams, route_table(canary, routes)]
