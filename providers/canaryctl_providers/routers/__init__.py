"""Routers: turn a RouteState into the objects of one mesh or ingress, chosen by ``spec.provider``.

``ROUTERS`` are the built-in routers, registered as ``canaryctl.routers`` entry points through
``create``; ``router_for`` picks any installed router (canaryctl.registry). ``unsupported_steps``
tells, before a rollout starts, whether every routing state the rollout will pass through is
expressible, so a fault step on SMI becomes an InvalidSpec condition instead of a silent no-op
halfway through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Final

from canaryctl import registry
from canaryctl.api.models import INCLUDED_MESH, Canary
from canaryctl.engine.steps import StepKind, compile_steps
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects, Router
from canaryctl_providers.routers import smi
from canaryctl_providers.routers.apisix import ApisixRouter
from canaryctl_providers.routers.appmesh import AppMeshRouter
from canaryctl_providers.routers.appmesh_v1beta1 import AppMeshV1beta1Router
from canaryctl_providers.routers.canaryctl import CanaryctlRouter
from canaryctl_providers.routers.common import ObjectRouter, UnsupportedRoutes
from canaryctl_providers.routers.contour import ContourRouter
from canaryctl_providers.routers.gatewayapi import GatewayApiRouter
from canaryctl_providers.routers.gloo import GlooRouter
from canaryctl_providers.routers.istio import IstioRouter
from canaryctl_providers.routers.knative import KnativeRouter
from canaryctl_providers.routers.kubernetes import KubernetesRouter
from canaryctl_providers.routers.kuma import KumaRouter
from canaryctl_providers.routers.linkerd import LinkerdRouter
from canaryctl_providers.routers.nginx import NginxRouter
from canaryctl_providers.routers.skipper import SkipperRouter
from canaryctl_providers.routers.smi import SmiRouter
from canaryctl_providers.routers.traefik import TraefikRouter

__all__ = ["ROUTERS", "UnsupportedRoutes", "create", "router_for", "spec_problem", "unsupported_steps"]

# Bare "smi" is SMI v1alpha1, the version of Flagger's original SMI router (and of the TrafficSplit its
# linkerd provider writes).
ROUTERS: Final[dict[str, Callable[[Objects], ObjectRouter]]] = {
    INCLUDED_MESH: CanaryctlRouter,
    "kubernetes": KubernetesRouter,
    "istio": IstioRouter,
    "linkerd": LinkerdRouter,
    "smi": lambda objects: SmiRouter(objects, "v1alpha1"),
    **{f"smi:{v}": partial(SmiRouter, version=v) for v in smi.VERSIONS},
    "gatewayapi": GatewayApiRouter,
    "gatewayapi:v1": GatewayApiRouter,
    "gatewayapi:v1beta1": lambda objects: GatewayApiRouter(objects, "v1beta1"),
    # Meshes
    "kuma": KumaRouter,
    "osm": lambda objects: SmiRouter(objects, "v1alpha2", "osm"),
    "appmesh": AppMeshV1beta1Router,
    "appmesh:v1beta2": AppMeshRouter,
    "knative": KnativeRouter,
    # Ingress controllers
    "nginx": NginxRouter,
    "contour": ContourRouter,
    "gloo": GlooRouter,
    "skipper": SkipperRouter,
    "traefik": TraefikRouter,
    "apisix": ApisixRouter,
}


def create(objects: Objects, provider: str) -> Router:
    """The factory behind every built-in router's entry point: the provider name picks the variant."""
    return ROUTERS[provider](objects)


def router_for(provider: str | None, objects: Objects, default: str = INCLUDED_MESH) -> Router:
    """The installed router for ``spec.provider``; the controller's default when the Canary names none.
    Raises ValueError (registry.UnknownPlugin) for a name no installed distribution registers."""
    return registry.router(provider or default, objects)


def route_states(canary: Canary) -> Iterator[tuple[str, RouteState]]:
    """Every RouteState the engine will ask for, labelled by where it happens. Follows the state
    machine's bookkeeping: timed mirror and fault steps switch off when left, the header route stays on
    until the rollout ends, promotion steps the weight down by stepWeightPromotion."""
    state = RouteState()
    for number, step in enumerate(compile_steps(canary.spec), start=1):
        if step.kind is StepKind.SET_WEIGHT:
            state = replace(state, canary_weight=step.weight)
        elif step.kind is StepKind.HEADER_ROUTE:
            state = replace(state, match=state.match or step.match)  # the engine keeps the first one
        elif step.kind is StepKind.MIRROR or step.mirror:
            state = replace(state, mirror_weight=step.mirror)
        if step.fault is not None:
            state = replace(state, fault=step.fault)
        yield f"step {number}: {step.describe()}", state
        if step.kind is StepKind.ANALYSIS and step.mirror:
            state = replace(state, mirror_weight=0)
        if step.fault is not None:
            state = replace(state, fault=None)
    weight, step_down = state.canary_weight, canary.spec.effective_analysis.step_weight_promotion
    while step_down and weight > 0:
        weight = max(0, weight - step_down)
        yield "promotion", RouteState(canary_weight=weight, match=state.match)


def spec_problem(canary: Canary, router: Router) -> str | None:
    """What ``router`` cannot work with in the Canary's spec outside the steps (an ingress router
    without spec.ingressRef), with the field path; None for routers that need nothing more."""
    if canary.spec.target_ref.knative and router.name != "knative":
        return f"spec.provider: a Knative Service target needs router knative, not {router.name}"
    check: Callable[[Canary], str | None] | None = getattr(router, "spec_problem", None)
    return check(canary) if check is not None else None


def unsupported_steps(canary: Canary, router: Router) -> str | None:
    """The first routing state of the rollout ``router`` cannot express, described for an InvalidSpec
    condition, e.g. "router smi:v1alpha2 cannot inject faults (...) (step 3: fault on canary ...)".
    analysis.sessionAffinity needs a router that can route by cookie and set response headers."""
    if canary.spec.effective_analysis.session_affinity is not None and not getattr(
        router, "session_affinity", False
    ):
        return (
            f"router {router.name} cannot express sessionAffinity (it needs cookie matches and "
            "Set-Cookie response headers); use the included mesh, istio or gatewayapi"
        )
    for label, state in route_states(canary):
        reason = router.unsupported(state)
        if reason is not None:
            return f"{reason} ({label})"
    return None
