"""Everything ``kubectl canary status`` shows, read from the cluster in one pass: the Canary, its primary
and canary workloads with their pods, the weight the router really has, and the Canary's last events.

Pods and events are also filtered here, not only by the server's selectors, so a server that ignores
selectors (an emulator) shows the same thing.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass

from canaryctl.api.models import (
    API_VERSION,
    INCLUDED_MESH,
    KNATIVE_SERVING_API,
    PRIMARY_SUFFIX,
    Canary,
    Phase,
    TargetKind,
)
from canaryctl.cli.kube import API_ERRORS, Obj, PluginObjects, describe_failure
from canaryctl.operator.knative import KnativeTargetError
from canaryctl.operator.workloads import KubeWorkloads, TargetError
from canaryctl_mesh.kinds import UnknownKind

EVENTS_SHOWN = 5
APPS = "apps/v1"
# Where the built-in routers keep the weights. Spelled out rather than imported: the plugin installs
# without the routers' distribution. The status tests read back what each router writes, so these
# cannot drift from the routers unnoticed.
SMI_SPLIT_GROUP = "split.smi-spec.io"
INCLUDED_MESH_SMI_VERSION = "v1alpha4"
GATEWAY_GROUP = "gateway.networking.k8s.io"
ISTIO_API_VERSION = "networking.istio.io/v1beta1"
LINKERD_API_VERSION = "policy.linkerd.io/v1beta3"
APPMESH_V1BETA1 = "appmesh.k8s.aws/v1beta1"
SKIPPER_WEIGHTS = "zalando.org/backend-weights"
NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


@dataclass(frozen=True)
class Pod:
    name: str
    phase: str
    ready: str  # ready containers / containers
    restarts: int


@dataclass(frozen=True)
class Workload:
    role: str  # primary | canary
    kind: str
    name: str
    found: bool
    ready: int = 0
    desired: int = 0
    images: tuple[str, ...] = ()
    pods: tuple[Pod, ...] = ()


@dataclass(frozen=True)
class ObservedWeight:
    """The canary weight the router object carries; None when it cannot be read (``source`` says why)."""

    weight: int | None
    source: str


@dataclass(frozen=True)
class Event:
    time: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class StatusView:
    canary: Canary
    workloads: tuple[Workload, ...] = ()
    observed: ObservedWeight | None = None
    events: tuple[Event, ...] = ()
    # True when the target changed and the operator has not started on the new revision yet.
    revision_pending: bool = False

    def to_data(self) -> Obj:
        return {**asdict(self), "canary": self.canary.to_wire()}


def _images(obj: Obj) -> tuple[str, ...]:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return tuple(str(c.get("image", "")) for c in containers)


def _counts(obj: Obj) -> tuple[int, int]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if obj.get("kind") == "DaemonSet":
        return int(status.get("numberReady") or 0), int(status.get("desiredNumberScheduled") or 0)
    return int(status.get("readyReplicas") or 0), int(spec.get("replicas", 1))


def _pod(obj: Obj) -> Pod:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    containers = ((obj.get("spec") or {}).get("containers")) or statuses
    ready = sum(bool(s.get("ready")) for s in statuses)
    return Pod(
        name=obj["metadata"]["name"],
        phase=str((obj.get("status") or {}).get("phase") or "Pending"),
        ready=f"{ready}/{len(containers)}",
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
    )


def _selects(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


async def _workload(objects: PluginObjects, canary: Canary, role: str) -> Workload:
    ref, namespace = canary.spec.target_ref, canary.metadata.namespace or "default"
    name = ref.name + (PRIMARY_SUFFIX if role == "primary" else "")
    found = await objects.get(APPS, ref.kind.value, namespace, name)
    if found is None:
        return Workload(role, ref.kind.value, name, found=False)
    selector = dict(((found.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
    pods = await objects.list_objects("v1", "Pod", namespace, label_selector) if selector else []
    mine = sorted(
        (_pod(p) for p in pods if _selects(p["metadata"].get("labels") or {}, selector)), key=lambda p: p.name
    )
    ready, desired = _counts(found)
    return Workload(role, ref.kind.value, name, True, ready, desired, _images(found), tuple(mine))


def _percent(value: object) -> int:
    """A weight: an integer percent, or (SMI v1alpha1) a Quantity string such as "900m" or "1"."""
    if isinstance(value, int):
        return value
    text = str(value)
    return round(float(text[:-1]) / 10) if text.endswith("m") else round(float(text) * 100)


def _router_object(canary: Canary) -> tuple[str, str, str] | None:
    """(apiVersion, kind, name) of the object holding the weights for ``spec.provider``; None without one."""
    provider = canary.spec.provider or INCLUDED_MESH
    apex = canary.spec.apex_name
    if provider == INCLUDED_MESH:
        return f"{SMI_SPLIT_GROUP}/{INCLUDED_MESH_SMI_VERSION}", "TrafficSplit", apex
    if provider == "smi":
        return f"{SMI_SPLIT_GROUP}/v1alpha1", "TrafficSplit", apex
    if provider == "osm":
        return f"{SMI_SPLIT_GROUP}/v1alpha2", "TrafficSplit", apex
    if provider.startswith("smi:"):
        return f"{SMI_SPLIT_GROUP}/{provider.partition(':')[2]}", "TrafficSplit", apex
    if provider == "linkerd":
        return LINKERD_API_VERSION, "HTTPRoute", apex
    if provider == "istio":
        return ISTIO_API_VERSION, "VirtualService", apex
    if provider.startswith("gatewayapi"):
        return f"{GATEWAY_GROUP}/{provider.partition(':')[2] or 'v1'}", "HTTPRoute", apex
    if provider == "kuma":
        return "kuma.io/v1alpha1", "MeshHTTPRoute", apex
    if provider == "appmesh:v1beta2":
        return "appmesh.k8s.aws/v1beta2", "VirtualRouter", apex
    if provider == "appmesh":
        return APPMESH_V1BETA1, "VirtualService", f"{apex}.{canary.metadata.namespace or 'default'}"
    if provider == "knative":
        return KNATIVE_SERVING_API, "Service", canary.spec.target_ref.name
    if provider in ("nginx", "skipper") and canary.spec.ingress_ref is not None:
        return "networking.k8s.io/v1", "Ingress", f"{canary.spec.ingress_ref.name}-canary"
    if provider == "contour":
        return "projectcontour.io/v1", "HTTPProxy", apex
    if provider == "gloo":
        return "gateway.solo.io/v1", "RouteTable", apex
    if provider == "traefik":
        return "traefik.io/v1alpha1", "TraefikService", apex
    if provider == "apisix" and canary.spec.route_ref is not None:
        return "apisix.apache.org/v2", "ApisixRoute", f"{canary.spec.route_ref.name}-{apex}-canary"
    return None


def _backends(api_version: str, kind: str, spec: Obj, annotations: Obj, canary_service: str) -> list[Obj]:
    """``{"service", "weight"}`` of the default (last) route's backends."""
    if kind == "TrafficSplit":
        return list(spec.get("backends") or [])
    if kind == "VirtualService" and api_version == APPMESH_V1BETA1:  # virtual nodes: the side Services
        action = ((spec.get("routes") or [{}])[-1].get("http") or {}).get("action") or {}
        return [
            {"service": t.get("virtualNodeName"), "weight": t.get("weight", 0)}
            for t in action.get("weightedTargets") or []
        ]
    if kind == "VirtualService":
        return [
            {"service": r.get("destination", {}).get("host"), "weight": r.get("weight", 0)}
            for r in ((spec.get("http") or [{}])[-1].get("route") or [])
        ]
    if kind == "MeshHTTPRoute":  # backends by kuma.io/service: <service>_<namespace>_svc_<port>
        rules = ((spec.get("to") or [{}])[0].get("rules") or [{}])[-1]
        return [
            {"service": str(r.get("name", "")).split("_")[0], "weight": r.get("weight", 0)}
            for r in (rules.get("default") or {}).get("backendRefs") or []
        ]
    if kind == "VirtualRouter":  # App Mesh: virtual nodes named after the side Services
        action = ((spec.get("routes") or [{}])[-1].get("httpRoute") or {}).get("action") or {}
        return [
            {"service": (t.get("virtualNodeRef") or {}).get("name"), "weight": t.get("weight", 0)}
            for t in action.get("weightedTargets") or []
        ]
    if kind == "Ingress":  # the canary Ingress: Skipper's backend weights, else ingress-nginx's weight
        return _ingress_backends(annotations, canary_service)
    if kind == "HTTPProxy":  # Contour leaves a zero weight out
        return [
            {"service": r.get("name"), "weight": r.get("weight", 0)}
            for r in ((spec.get("routes") or [{}])[-1].get("services") or [])
        ]
    if kind == "RouteTable":  # Gloo: upstreams <namespace>-<side service>upstream-<port>
        multi = (((spec.get("routes") or [{}])[-1].get("routeAction") or {}).get("multi")) or {}
        backends = []
        for d in multi.get("destinations") or []:
            name = str(((d.get("destination") or {}).get("upstream") or {}).get("name", ""))
            upstream = re.fullmatch(rf".+-{re.escape(canary_service)}upstream-\d+", name)
            backends.append({"service": canary_service if upstream else name, "weight": d.get("weight", 0)})
        return backends
    if kind == "TraefikService":  # a side with weight 0 is left out
        services = (spec.get("weighted") or {}).get("services") or []
        listed = [{"service": r.get("name"), "weight": r.get("weight", 0)} for r in services]
        if services and all(b["service"] != canary_service for b in listed):
            listed.append({"service": canary_service, "weight": 0})
        return listed
    if kind == "ApisixRoute":
        return [
            {"service": b.get("serviceName"), "weight": b.get("weight", 0)}
            for b in ((spec.get("http") or [{}])[-1].get("backends") or [])
        ]
    return [
        {"service": r.get("name"), "weight": r.get("weight", 1)}
        for r in ((spec.get("rules") or [{}])[-1].get("backendRefs") or [])
    ]


def _ingress_backends(annotations: Obj, canary_service: str) -> list[Obj]:
    if SKIPPER_WEIGHTS in annotations:
        try:
            weights = json.loads(str(annotations[SKIPPER_WEIGHTS]))
        except ValueError:
            return []
        return [{"service": k, "weight": v} for k, v in weights.items()] if isinstance(weights, dict) else []
    if annotations.get(NGINX_CANARY) == "true":
        weight = str(annotations.get(NGINX_WEIGHT) or "0")
        return [{"service": canary_service, "weight": int(weight) if weight.isdigit() else 0}]
    if NGINX_CANARY in annotations:  # the canary Ingress switched off
        return [{"service": canary_service, "weight": 0}]
    return []


def _canary_weight(api_version: str, kind: str, obj: Obj, canary_service: str) -> int | None:
    """The weight of the default (last) route's canary backend (Knative: the latest revision's)."""
    spec = obj.get("spec") or {}
    if kind == "Service":  # Knative: the canary is the latest revision
        latest = [t for t in spec.get("traffic") or [] if t.get("latestRevision")]
        return _percent(latest[0].get("percent", 0)) if latest else None
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for backend in _backends(api_version, kind, spec, annotations, canary_service):
        if backend.get("service") == canary_service:
            return _percent(backend.get("weight", 0))
    return None


async def observed_weight(objects: PluginObjects, canary: Canary) -> ObservedWeight:
    located = _router_object(canary)
    provider = canary.spec.provider or INCLUDED_MESH
    if located is None:
        return ObservedWeight(None, f"provider {provider} has no weights to read")
    api_version, kind, name = located
    namespace = canary.metadata.namespace or "default"
    try:
        found = await objects.get(api_version, kind, namespace, name)
    except UnknownKind:
        return ObservedWeight(None, f"{kind} {api_version} is not in canaryctl's kind table")
    if found is None:
        return ObservedWeight(None, f"{kind} {name} not found")
    if kind == "TrafficSplit" and (found.get("spec") or {}).get("matches"):
        return ObservedWeight(None, f"{kind} {name} routes matching requests only")
    weight = _canary_weight(api_version, kind, found, canary.spec.side_service(False))
    return ObservedWeight(weight, f"{kind} {name}")


def _event_time(obj: Obj) -> str:
    return str(obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("firstTimestamp") or "")


async def events(
    objects: PluginObjects, canary: Canary, last: int | None = EVENTS_SHOWN
) -> tuple[Event, ...]:
    """The Canary's Events, oldest first: the ``last`` few, or all of them."""
    name, namespace = canary.metadata.name or "", canary.metadata.namespace or "default"
    selector = f"involvedObject.kind=Canary,involvedObject.name={name}"
    found = await objects.list_selected("v1", "Event", namespace, selector)
    mine = [
        e
        for e in found
        if (e.get("involvedObject") or {}).get("kind") == "Canary"
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    mine.sort(key=_event_time)
    return tuple(
        Event(
            _event_time(e), str(e.get("type") or ""), str(e.get("reason") or ""), str(e.get("message") or "")
        )
        for e in (mine[-last:] if last else mine)
    )


async def revision_pending(objects: PluginObjects, canary: Canary) -> bool:
    """The target's revision differs from what the operator last started (or promoted)."""
    status = canary.status
    if status is None or status.phase not in (Phase.SUCCEEDED, Phase.FAILED, Phase.INITIALIZED):
        return False
    try:
        revision = await KubeWorkloads(objects).revision(canary)
    except (TargetError, KnativeTargetError):
        return False
    return revision.hash not in (status.last_applied_spec, status.last_promoted_spec)


async def gather(objects: PluginObjects, canary: Canary) -> StatusView:
    what = f"canary {canary.metadata.namespace}/{canary.metadata.name}"
    workloads: tuple[Workload, ...] = ()
    try:
        if canary.spec.target_ref.kind is not TargetKind.SERVICE:
            workloads = tuple(
                await asyncio.gather(*(_workload(objects, canary, r) for r in ("primary", "canary")))
            )
        observed, recent, pending = await asyncio.gather(
            observed_weight(objects, canary), events(objects, canary), revision_pending(objects, canary)
        )
    except API_ERRORS as exc:
        raise describe_failure(what, exc) from exc
    return StatusView(canary, workloads, observed, recent, pending)


async def list_canaries(
    objects: PluginObjects, namespace: str | None, selector: str | None = None
) -> list[Obj]:
    """The API server filters by the label selector, as for kubectl get -l."""
    try:
        return await objects.list_objects(API_VERSION, "Canary", namespace, selector)
    except API_ERRORS as exc:
        raise describe_failure(f"canaries in {namespace or 'all namespaces'}", exc) from exc
