"""What the ingress routers share: the user's objects they copy and the steps most of them refuse.

``spec.ingressRef`` (nginx, skipper) and ``spec.routeRef`` (apisix) name an object in the Canary's
namespace that the router copies into its canary object, as Flagger does.

A reference that cannot work (missing, another kind, another namespace) is a spec problem the operator
reports as InvalidSpec before anything is written; a referenced object that is missing or does not
route to the apex Service is a LookupError at apply time (the user may create it later).
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Iterable

from canaryctl.api.models import Canary, CrossNamespaceObjectReference
from canaryctl.api.owned import owner_references
from canaryctl.drift import APPLIED_ANNOTATION
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects
from canaryctl_providers.routers.common import Obj, ObjectRouter, namespace

INGRESS_API = "networking.k8s.io/v1"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def reference_problem(
    canary: Canary, field: str, ref: CrossNamespaceObjectReference | None, router: str, api: str, kind: str
) -> str | None:
    """Why ``spec.<field>`` cannot name the ``kind`` the router copies, or None. The object must be in
    the Canary's namespace: the router copies it with the controller's rights."""
    if ref is None:
        return f"spec.{field}: required by router {router} (the {kind} it copies for the canary)"
    if ref.kind not in (None, kind) or ref.api_version not in (None, api):
        return f"spec.{field}: router {router} copies a {kind} ({api}), not {ref.api_version} {ref.kind}"
    if ref.namespace not in (None, namespace(canary)):
        return f"spec.{field}: the {kind} must be in the Canary's namespace {namespace(canary)!r}"
    return None


def service_match_problem(canary: Canary, router: str, source: str) -> str | None:
    """Routers that copy the user's routes cannot restrict them by spec.service.match."""
    if canary.spec.service.match:
        return f"spec.service.match: router {router} takes its routes from the {source}; remove the match"
    return None


async def referenced(objects: Objects, canary: Canary, api: str, kind: str, name: str) -> Obj:
    found = await objects.get(api, kind, namespace(canary), name)
    if found is None:
        raise LookupError(f"{kind} {namespace(canary)}/{name} not found")
    return found


def copied_metadata(
    canary: Canary, source: Obj, name: str, drop: Iterable[str] = (), add: dict[str, str] | None = None
) -> Obj:
    """Metadata of the canary copy of ``source``: its labels and annotations (without kubectl's
    last-applied record, canaryctl's own digest and keys starting with one in ``drop``) plus ``add``,
    owned by the Canary."""
    meta = source.get("metadata") or {}
    dropped = (LAST_APPLIED, APPLIED_ANNOTATION, *drop)
    out: Obj = {"name": name, "namespace": namespace(canary)}
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(dropped)}
    annotations |= add or {}
    if annotations:
        out["annotations"] = annotations
    owners = owner_references(canary)
    if owners:
        out["ownerReferences"] = owners
    return out


def ingress_copy(canary: Canary, source: Obj) -> tuple[Obj, list[tuple[list[Obj], Obj]]]:
    """A deep copy of the Ingress's spec and, in it, every path whose backend is the apex Service with
    the path list holding it; LookupError when there is none (Flagger: "backend not found")."""
    spec: Obj = copy.deepcopy(source.get("spec") or {})
    apex = canary.spec.apex_name
    found = [
        (paths, path)
        for rule in spec.get("rules") or []
        for paths in [(rule.get("http") or {}).get("paths") or []]
        for path in paths
        if ((path.get("backend") or {}).get("service") or {}).get("name") == apex
    ]
    if not found:
        name = (source.get("metadata") or {}).get("name")
        raise LookupError(f"Ingress {namespace(canary)}/{name} has no path with backend Service {apex!r}")
    return spec, found


class IngressCopyRouter(ObjectRouter):
    """A router writing ``<ingress>-canary``, its copy of the Ingress ``spec.ingressRef`` names."""

    @staticmethod
    @abstractmethod
    def canary_ingress(canary: Canary, source: Obj, routes: RouteState) -> Obj: ...

    def spec_problem(self, canary: Canary) -> str | None:
        ref = canary.spec.ingress_ref
        return reference_problem(
            canary, "ingressRef", ref, self.name, INGRESS_API, "Ingress"
        ) or service_match_problem(canary, self.name, "Ingress")

    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]:
        source = await referenced(self.objects, canary, INGRESS_API, "Ingress", ingress_name(canary))
        return [self.canary_ingress(canary, source, routes)]


def ingress_name(canary: Canary) -> str:
    assert canary.spec.ingress_ref is not None  # spec_problem says so first
    return canary.spec.ingress_ref.name


def weights_only_problem(router: str, routes: RouteState, why: str) -> str | None:
    """For routers that only split by weight: the header route, mirror or fault that ``why`` (what the
    object they write lacks) rules out."""
    if routes.match:
        return f"router {router} cannot route by header ({why})"
    return mirror_or_fault_problem(router, routes, why, why)


def mirror_or_fault_problem(router: str, routes: RouteState, mirror: str, fault: str) -> str | None:
    """The mirror or fault step ``routes`` asks for, refused with the reason given for each."""
    if routes.mirror_weight:
        return f"router {router} cannot mirror traffic ({mirror})"
    if routes.fault is not None:
        return f"router {router} cannot inject faults ({fault})"
    return None
