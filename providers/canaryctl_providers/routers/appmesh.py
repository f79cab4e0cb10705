"""AWS App Mesh (``appmesh:v1beta2``): the VirtualNodes, VirtualRouters and VirtualServices Flagger writes.

AWS ended App Mesh support in 2026; these manifests are written for clusters still running the App Mesh
controller (v1beta2 API, controller v1.x). Per Canary, as Flagger:

- VirtualNodes ``<apex>-primary`` and ``<apex>-canary``: a listener on the container port (gRPC when
  ``spec.service.portName`` says so), DNS discovery ``<service>.<namespace>.svc.cluster.local.``, the
  pods of the side's Service (its selector, so the target's label key need not be known),
  ``spec.service.backends`` (names or ARNs) and, with the Canary annotation
  ``appmesh.flagger.app/accesslog: enabled``, an access log to stdout;
- VirtualRouter + VirtualService ``<apex>``: the weighted route between the two nodes;
- VirtualRouter + VirtualService ``<apex>-canary``: everything to the canary node, for load tests.

A header route is a higher-priority route per match (headers only) sending everything to the canary,
like Flagger's ``<apex>-a`` route. App Mesh has no mirroring or fault injection: both are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest, StringMatch
from canaryctl.engine.types import RouteState
from canaryctl_mesh.duration import parse_duration
from canaryctl_providers.routers.common import (
    Obj,
    ObjectRouter,
    header_route_active,
    match_problem,
    metadata,
    namespace,
    side_selector,
)

GROUP: Final = "appmesh.k8s.aws"
VERSION: Final = "v1beta2"
API_VERSION: Final = f"{GROUP}/{VERSION}"
ACCESS_LOG_ANNOTATION: Final = "appmesh.flagger.app/accesslog"
GATEWAY_ANNOTATION: Final = "gateway.appmesh.k8s.aws"
MATCH_FIELDS: Final = ("headers",)
# Flagger's priorities: header routes before the default route.
HEADER_PRIORITY: Final = 10
DEFAULT_PRIORITY: Final = 20
DNS_SUFFIX: Final = "svc.cluster.local."
# Envoy's retryOn names (and App Mesh's own) → App Mesh retry events.
HTTP_RETRY_EVENTS: Final = {
    "5xx": "server-error",
    "server-error": "server-error",
    "gateway-error": "gateway-error",
    "retriable-4xx": "client-error",
    "client-error": "client-error",
    "refused-stream": "stream-error",
    "stream-error": "stream-error",
}
TCP_RETRY_EVENTS: Final = {"reset": "connection-error", "connect-failure": "connection-error"}


def _ms(duration: str) -> Obj:
    return {"unit": "ms", "value": round(parse_duration(duration) * 1000)}


def _container_port(canary: Canary) -> int:
    target = canary.spec.service.target_port
    return target if isinstance(target, int) and target > 0 else canary.spec.service.port


def port_mapping(canary: Canary) -> Obj:
    protocol = "grpc" if "grpc" in canary.spec.service.port_name else "http"
    return {"port": _container_port(canary), "protocol": protocol}


def _route_timeout(canary: Canary) -> Obj | None:
    timeout = canary.spec.service.timeout
    return {"perRequest": _ms(timeout)} if timeout else None


def retry_policy(canary: Canary) -> Obj | None:
    """Flagger's defaults (one attempt, 250 ms per try, on gateway errors). retryOn takes Envoy's names,
    as for Istio; each becomes the App Mesh retry event its CRD accepts (Flagger copies them verbatim,
    which the API server rejects for anything but App Mesh's own names)."""
    retries = canary.spec.service.retries
    if retries is None:
        return None
    http: list[str] = []
    tcp: list[str] = []
    for event in (retries.retry_on or "gateway-error").split(","):
        if event.strip() in TCP_RETRY_EVENTS:
            tcp.append(TCP_RETRY_EVENTS[event.strip()])
        elif event.strip() in HTTP_RETRY_EVENTS:
            http.append(HTTP_RETRY_EVENTS[event.strip()])
        else:
            known = ", ".join(sorted({*HTTP_RETRY_EVENTS, *TCP_RETRY_EVENTS}))
            raise ValueError(
                f"spec.service.retries.retryOn: App Mesh cannot retry on {event.strip()!r}; use {known}"
            )
    default_try = {"unit": "ms", "value": 250}
    policy: Obj = {
        "maxRetries": retries.attempts or 1,
        "perRetryTimeout": _ms(retries.per_try_timeout) if retries.per_try_timeout else default_try,
    }
    if http:
        policy["httpRetryEvents"] = list(dict.fromkeys(http))
    if tcp:
        policy["tcpRetryEvents"] = list(dict.fromkeys(tcp))
    return policy


def header_match(match: StringMatch) -> Obj:
    if match.exact is not None:
        return {"exact": match.exact}
    if match.prefix is not None:
        return {"prefix": match.prefix}
    if match.suffix is not None:
        return {"suffix": match.suffix}
    return {"regex": match.regex}


def route_prefix(canary: Canary) -> str:
    """Flagger routes the first ``spec.service.match`` URI prefix, else everything."""
    service_match = canary.spec.service.match or []
    if service_match and service_match[0].uri is not None and service_match[0].uri.prefix:
        return service_match[0].uri.prefix
    return "/"


def _targets(canary: Canary, canary_weight: int) -> list[Obj]:
    return [
        {"virtualNodeRef": {"name": canary.spec.side_service(False)}, "weight": canary_weight},
        {"virtualNodeRef": {"name": canary.spec.side_service(True)}, "weight": 100 - canary_weight},
    ]


def _route(canary: Canary, name: str, canary_weight: int, match: HTTPMatchRequest | None = None) -> Obj:
    http: Obj = {"match": {"prefix": route_prefix(canary)}}
    if match is not None and match.headers:
        http["match"]["headers"] = [
            {"name": header, "match": header_match(value)} for header, value in match.headers.items()
        ]
    timeout, retries = _route_timeout(canary), retry_policy(canary)
    if timeout is not None:
        http["timeout"] = timeout
    if retries is not None:
        http["retryPolicy"] = retries
    http["action"] = {"weightedTargets": _targets(canary, canary_weight)}
    return {"name": name, "httpRoute": http}


def virtual_node(canary: Canary, primary: bool, selector: dict[str, str]) -> Obj:
    name = canary.spec.side_service(primary)
    listener: Obj = {"portMapping": port_mapping(canary)}
    timeout = _route_timeout(canary)
    if timeout is not None:
        listener["timeout"] = {"http": timeout}
    spec: Obj = {
        "listeners": [listener],
        "serviceDiscovery": {"dns": {"hostname": f"{name}.{namespace(canary)}.{DNS_SUFFIX}"}},
        "podSelector": {"matchLabels": selector},
    }
    backends = [
        {
            "virtualService": {"virtualServiceARN": b}
            if b.startswith("arn:aws")
            else {"virtualServiceRef": {"name": b}}
        }
        for b in canary.spec.service.backends or []
    ]
    if backends:
        spec["backends"] = backends
    annotations = (canary.metadata.model_extra or {}).get("annotations") or {}
    if annotations.get(ACCESS_LOG_ANNOTATION) == "enabled":
        spec["logging"] = {"accessLog": {"file": {"path": "/dev/stdout"}}}
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualNode",
        "metadata": metadata(canary, name, apex=True),
        "spec": spec,
    }


def gateway_annotations(canary: Canary) -> dict[str, str]:
    """Flagger exposes the apex through an App Mesh gateway when spec.service.hosts is set."""
    service = canary.spec.service
    if not service.hosts:
        return {}
    out = {
        f"{GATEWAY_ANNOTATION}/expose": "true",
        f"{GATEWAY_ANNOTATION}/domain": "".join(f"{h}," for h in service.hosts),
    }
    if service.timeout:
        out[f"{GATEWAY_ANNOTATION}/timeout"] = service.timeout
    if service.retries is not None and service.retries.attempts > 0:
        out[f"{GATEWAY_ANNOTATION}/retries"] = str(service.retries.attempts)
    return out


def _router_and_service(
    canary: Canary, name: str, routes: list[Obj], annotations: dict[str, str]
) -> list[Obj]:
    router = {
        "apiVersion": API_VERSION,
        "kind": "VirtualRouter",
        "metadata": metadata(canary, name),
        "spec": {"listeners": [{"portMapping": port_mapping(canary)}], "routes": routes},
    }
    service_meta = metadata(canary, name)
    if annotations:
        service_meta["annotations"] = annotations
    service = {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": service_meta,
        "spec": {"provider": {"virtualRouter": {"virtualRouterRef": {"name": name}}}},
    }
    return [router, service]


# One route of either API version: (canary, name, canary weight, header match or None) → route.
RouteBuilder = Callable[[Canary, str, int, HTTPMatchRequest | None], Obj]


def apex_routes(canary: Canary, routes: RouteState, build: RouteBuilder = _route) -> list[Obj]:
    """The weighted route, after a route per header match (each everything to the canary), with
    Flagger's priorities; ``build`` writes one route in the API version's shape."""
    apex = canary.spec.apex_name
    if not header_route_active(routes):
        return [build(canary, apex, routes.canary_weight, None)]
    header_routes = [
        {
            **build(canary, f"{apex}-a" if i == 0 else f"{apex}-a-{i}", 100, match),
            "priority": HEADER_PRIORITY + i,
        }
        for i, match in enumerate(routes.match)
    ]
    return [
        *header_routes,
        {**build(canary, f"{apex}-b", routes.canary_weight, None), "priority": DEFAULT_PRIORITY},
    ]


def desired(
    canary: Canary, routes: RouteState, selectors: tuple[dict[str, str], dict[str, str]]
) -> list[Obj]:
    """``selectors``: the primary's and the canary's pod labels."""
    apex, canary_name = canary.spec.apex_name, canary.spec.side_service(False)
    return [
        virtual_node(canary, True, selectors[0]),
        virtual_node(canary, False, selectors[1]),
        *_router_and_service(canary, apex, apex_routes(canary, routes), gateway_annotations(canary)),
        *_router_and_service(canary, canary_name, [_route(canary, canary_name, 100)], {}),
    ]


class AppMeshRouter(ObjectRouter):
    name = "appmesh:v1beta2"

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.mirror_weight:
            return f"router {self.name} cannot mirror traffic (App Mesh has no mirroring)"
        if routes.fault is not None:
            return f"router {self.name} cannot inject faults (App Mesh has no fault injection)"
        return match_problem(self.name, routes.match, MATCH_FIELDS)

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        selectors = (
            await side_selector(self.objects, self.name, canary, primary=True),
            await side_selector(self.objects, self.name, canary, primary=False),
        )
        return desired(canary, routes, selectors)
