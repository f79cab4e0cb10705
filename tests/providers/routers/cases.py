"""Canaries, route states and an in-memory ``Objects`` shared by the router tests."""

from __future__ import annotations

import copy
from typing import Any

from canaryctl.api.models import (
    Canary,
    CrossNamespaceObjectReference,
    FaultAbort,
    FaultDelay,
    FaultStatus,
    HTTPMatchRequest,
)
from canaryctl.engine.types import RouteState

NS = "test"
UID = "5f0c2d6e-8a51-4c0e-9a7e-0d1f3b7c9a11"

AB_MATCH = (
    HTTPMatchRequest.model_validate({"headers": {"x-canary": {"exact": "insider"}}}),
    HTTPMatchRequest.model_validate({"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}),
)
FAULT = FaultStatus(
    delay=FaultDelay(fixed_delay="5s", percentage=50), abort=FaultAbort(http_status=503, percentage=10)
)

INGRESS_COPIERS = ("nginx", "skipper")

# The route states every golden is written for; a router gets only the ones it supports.
STATES: dict[str, RouteState] = {
    "initial": RouteState(),
    "weights-90-10": RouteState(canary_weight=10),
    "ab": RouteState(match=AB_MATCH),
    "mirror-30": RouteState(mirror_weight=30),
    "fault-weight-10": RouteState(canary_weight=10, fault=FAULT),
    "fault-weight-100": RouteState(canary_weight=100, fault=FAULT),
    "fault-ab": RouteState(match=AB_MATCH, fault=FAULT),
    "promoted-100": RouteState(canary_weight=100),
}


# spec.service of make_canary with the App Mesh mesh name (v1beta1) set.
MESH_SERVICE: dict[str, Any] = {
    "port": 9898,
    "timeout": "30s",
    "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "gateway-error,reset"},
    "meshName": "global",
}


def make_canary(service: dict[str, Any] | None = None, analysis: dict[str, Any] | None = None) -> Canary:
    """podinfo in namespace test, stored (it has a uid), with a timeout and retries to pass through."""
    return Canary.model_validate(
        {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": NS, "uid": UID},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": service
                or {
                    "port": 9898,
                    "timeout": "30s",
                    "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "gateway-error,reset"},
                },
                "analysis": analysis or {"interval": "10s", "stepWeight": 10, "maxWeight": 50},
            },
        }
    )


def user_ingress(**annotations: str) -> dict[str, Any]:
    """The user's Ingress for podinfo: one host, the apex Service at /, another Service at /docs."""

    def path(prefix: str, service: str) -> dict[str, Any]:
        backend = {"service": {"name": service, "port": {"number": 9898}}}
        return {"path": prefix, "pathType": "Prefix", "backend": backend}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "podinfo",
            "namespace": NS,
            "labels": {"app": "podinfo"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kubernetes.io/ingress.class": "nginx",
                **annotations,
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "app.example.com",
                    "http": {"paths": [path("/", "podinfo"), path("/docs", "docs")]},
                }
            ],
        },
    }


def side_services(canary: Canary) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": canary.spec.side_service(primary), "namespace": NS},
            "spec": {"selector": {"app": "podinfo-primary" if primary else "podinfo"}},
        }
        for primary in (True, False)
    ]


def ingress_canary(analysis: dict[str, Any] | None = None) -> Canary:
    canary = make_canary(analysis=analysis)
    return canary.model_copy(
        update={
            "spec": canary.spec.model_copy(update={"ingress_ref": ref("networking.k8s.io/v1", "Ingress")})
        }
    )


def ref(api: str, kind: str, name: str = "podinfo") -> CrossNamespaceObjectReference:
    return CrossNamespaceObjectReference.model_validate({"apiVersion": api, "kind": kind, "name": name})


APISIX_API = "apisix.apache.org/v2"


def user_apisix_route() -> dict[str, Any]:
    """The user's ApisixRoute: the apex Service behind /*, another Service behind /docs/*."""

    def route(name: str, path: str, service: str) -> dict[str, Any]:
        backend = {"serviceName": service, "servicePort": 9898, "resolveGranularity": "service"}
        return {"name": name, "match": {"hosts": ["app.example.com"], "paths": [path]}, "backends": [backend]}

    return {
        "apiVersion": APISIX_API,
        "kind": "ApisixRoute",
        "metadata": {"name": "web", "namespace": NS, "labels": {"app": "podinfo"}},
        "spec": {
            "ingressClassName": "apisix",
            "http": [route("docs", "/docs/*", "docs"), route("app", "/*", "podinfo")],
        },
    }


def apisix_canary() -> Canary:
    canary = make_canary()
    return canary.model_copy(
        update={"spec": canary.spec.model_copy(update={"route_ref": ref(APISIX_API, "ApisixRoute", "web")})}
    )


def prerequisites(provider: str, canary: Canary) -> list[dict[str, Any]]:
    """The objects a router reads before it writes: the side Services, and the Ingress or ApisixRoute
    the router copies."""
    copied = [user_ingress()] if provider in INGRESS_COPIERS else []
    copied += [user_apisix_route()] if provider == "apisix" else []
    return [*side_services(canary), *copied]


def canary_for(provider: str) -> Canary:
    """The podinfo Canary, with spec.ingressRef or spec.routeRef for the routers that need it."""
    if provider == "apisix":
        return apisix_canary()
    if provider == "appmesh":  # the v1beta1 API names the mesh
        return make_canary(MESH_SERVICE)
    return ingress_canary() if provider in INGRESS_COPIERS else make_canary()


def _merge(current: Any, previous: Any, new: Any) -> Any:
    """Server-side apply by one field manager: fields it applied before and omits (or sets to null) now
    are removed, fields it applies are set, fields other managers own stay. Lists are atomic, as for
    these CRDs."""
    if not isinstance(new, dict) or not isinstance(current, dict):
        return copy.deepcopy(new)
    previous = previous if isinstance(previous, dict) else {}
    merged = {k: v for k, v in current.items() if k in new or k not in previous}
    for field, value in new.items():
        if value is None:  # an explicit null: this manager stops setting the field
            merged.pop(field, None)
            continue
        merged[field] = _merge(current.get(field), previous.get(field), value)
    return merged


class InMemoryObjects:
    """The ``Objects`` port over a dict; stands in for the Kubernetes API the real adapter talks to."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.store: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.applied: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.log: list[str] = []
        for obj in objects:
            self.store[self._key(obj)] = copy.deepcopy(obj)

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.store.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = self._key(obj)
        self.store[key] = _merge(self.store.get(key, {}), self.applied.get(key, {}), obj)
        self.applied[key] = copy.deepcopy(obj)
        self.log.append(f"apply {obj['kind']}/{key[3]}")
        return copy.deepcopy(self.store[key])

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        key = (api_version, kind, namespace, name)
        if key not in self.store:
            raise KeyError(f"{kind} {namespace}/{name} not found")
        del self.store[key]
        self.applied.pop(key, None)
        self.log.append(f"delete {kind}/{name}")

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for key, obj in self.store.items() if key[1] == kind]
