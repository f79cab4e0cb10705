"""AWS App Mesh, v1beta1 API (``appmesh``): the objects Flagger's original appmesh provider writes for the
App Mesh controller v0.x.

AWS ended App Mesh support in 2026, and the v1beta1 API (controller v0.x) was replaced by v1beta2 long
before; these manifests are written for clusters still running that controller. Per Canary, as Flagger:

- VirtualNodes ``<apex>`` (resolving to the primary), ``<apex>-primary`` and ``<apex>-canary``: mesh
  ``spec.service.meshName``, a listener on ``spec.service.port`` (gRPC when ``portName`` says so), DNS
  discovery ``<service>.<namespace>``, ``spec.service.backends`` and, with the Canary annotation
  ``appmesh.flagger.app/accesslog: enabled``, an access log to stdout; the apex labels and annotations
  of ``spec.service.apex``;
- VirtualService ``<apex>.<namespace>`` with its embedded virtual router ``<apex>``: the weighted route
  between the two nodes;
- VirtualService ``<apex>-canary.<namespace>`` (router ``<apex>-canary``): everything to the canary.

Unlike v1beta2 a v1beta1 VirtualNode names no pods: the controller's injector matches pods to it. A
header route is a route per match (priority 10, 11, …) sending everything to the canary before the
weighted ``<apex>-b`` (priority 20); the v0.x controller reads ``priority`` on the route, as Flagger
writes it. Mirroring, faults and ``spec.service.timeout`` have no v1beta1 field: the first two are
refused, the timeout is not written.
"""

from __future__ import annotations

from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.appmesh import (
    ACCESS_LOG_ANNOTATION,
    AppMeshRouter,
    apex_routes,
    gateway_annotations,
    header_match,
    retry_policy,
    route_prefix,
)
from canaryctl_providers.routers.common import Obj, metadata, namespace

API_VERSION: Final = "appmesh.k8s.aws/v1beta1"


def _port_mapping(canary: Canary) -> Obj:
    protocol = "grpc" if "grpc" in canary.spec.service.port_name else "http"
    return {"port": canary.spec.service.port, "protocol": protocol}


def _retry_policy(canary: Canary) -> Obj | None:
    """v1beta2's retry policy (the same events) in v1beta1's fields."""
    policy = retry_policy(canary)
    if policy is None:
        return None
    out: Obj = {
        "perRetryTimeoutMillis": policy["perRetryTimeout"]["value"],
        "maxRetries": policy["maxRetries"],
    }
    for events in ("httpRetryEvents", "tcpRetryEvents"):
        if events in policy:
            out[events] = policy[events]
    return out


def _route(canary: Canary, name: str, canary_weight: int, match: HTTPMatchRequest | None = None) -> Obj:
    http: Obj = {"match": {"prefix": route_prefix(canary)}}
    if match is not None and match.headers:
        http["match"]["headers"] = [
            {"name": header, "match": header_match(value)} for header, value in match.headers.items()
        ]
    retries = _retry_policy(canary)
    if retries is not None:
        http["retryPolicy"] = retries
    apex = canary.spec.apex_name
    http["action"] = {
        "weightedTargets": [
            {"virtualNodeName": f"{apex}-canary", "weight": canary_weight},
            {"virtualNodeName": f"{apex}-primary", "weight": 100 - canary_weight},
        ]
    }
    return {"name": name, "http": http}


def virtual_node(canary: Canary, name: str, host: str) -> Obj:
    spec: Obj = {
        "meshName": canary.spec.service.mesh_name,
        "listeners": [{"portMapping": _port_mapping(canary)}],
        "serviceDiscovery": {"dns": {"hostName": f"{host}.{namespace(canary)}"}},
    }
    annotations = (canary.metadata.model_extra or {}).get("annotations") or {}
    if annotations.get(ACCESS_LOG_ANNOTATION) == "enabled":
        spec["logging"] = {"accessLog": {"file": {"path": "/dev/stdout"}}}
    backends = [{"virtualService": {"virtualServiceName": b}} for b in canary.spec.service.backends or []]
    if backends:
        spec["backends"] = backends
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualNode",
        "metadata": metadata(canary, name, apex=True),
        "spec": spec,
    }


def _virtual_service(canary: Canary, router: str, routes: list[Obj], annotations: dict[str, str]) -> Obj:
    meta = metadata(canary, f"{router}.{namespace(canary)}")
    if annotations:
        meta["annotations"] = annotations
    spec = {
        "meshName": canary.spec.service.mesh_name,
        "virtualRouter": {"name": router, "listeners": [{"portMapping": _port_mapping(canary)}]},
        "routes": routes,
    }
    return {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta, "spec": spec}


def desired(canary: Canary, routes: RouteState) -> list[Obj]:
    apex = canary.spec.apex_name
    primary, side = canary.spec.side_service(True), canary.spec.side_service(False)
    return [
        virtual_node(canary, apex, primary),
        virtual_node(canary, primary, primary),
        virtual_node(canary, side, side),
        _virtual_service(canary, apex, apex_routes(canary, routes, _route), gateway_annotations(canary)),
        _virtual_service(canary, side, [_route(canary, side, 100)], {}),
    ]


class AppMeshV1beta1Router(AppMeshRouter):
    """What v1beta2's router refuses, this one refuses; the objects differ."""

    name = "appmesh"

    def spec_problem(self, canary: Canary) -> str | None:
        if not canary.spec.service.mesh_name:
            return f"spec.service.meshName: router {self.name} needs the App Mesh mesh name (v1beta1 API)"
        return None

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        return desired(canary, routes)
