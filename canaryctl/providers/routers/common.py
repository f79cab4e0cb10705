"""What every router shares: object metadata, match translation, and the apply/prune loop.

Each router module has a pure ``desired(canary, routes, ...) -> list[dict]`` (the exact objects, so
golden tests can pin them) and a thin class over ``ObjectRouter`` that writes them through ``Objects``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from canaryctl.api.models import Canary, HTTPMatchRequest, StringMatch
from canaryctl.api.owned import metadata as metadata  # re-exported: every router module uses them
from canaryctl.api.owned import namespace as namespace
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects

Obj = dict[str, Any]
ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

_REGEX_SPECIALS = frozenset(".^$*+?()[]{}|\\")


class UnsupportedRoutes(ValueError):
    """Raised by ``apply`` for a RouteState the router cannot express exactly (never a silent no-op)."""


def key(obj: Obj) -> ObjectKey:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


def escape_regex(text: str) -> str:
    """RE2-safe literal: escape only RE2 metacharacters (Python's re.escape also escapes spaces)."""
    return "".join(f"\\{c}" if c in _REGEX_SPECIALS else c for c in text)


def as_regex(match: StringMatch) -> str:
    """An Istio StringMatch as an anchored RE2 regex: means the same under full and partial matching."""
    if match.regex is not None:
        return match.regex
    if match.exact is not None:
        return f"^{escape_regex(match.exact)}$"
    if match.prefix is not None:
        return f"^{escape_regex(match.prefix)}.*"
    return f".*{escape_regex(match.suffix or '')}$"


def merge_matches(
    ab: Sequence[HTTPMatchRequest], service: Sequence[HTTPMatchRequest] | None
) -> list[HTTPMatchRequest]:
    """A/B matches restricted to spec.service.match: every (A/B, service) pair ANDed, the pairs ORed.

    On a field both set, the A/B match wins; headers are merged key by key.
    """
    if not service:
        return list(ab)
    merged: list[HTTPMatchRequest] = []
    for a in ab:
        for s in service:
            fields = {**s.model_dump(exclude_none=True), **a.model_dump(exclude_none=True)}
            if s.headers and a.headers:
                fields["headers"] = {**s.headers, **a.headers}
            merged.append(HTTPMatchRequest.model_validate(fields))
    return merged


def unexpressible(matches: Iterable[HTTPMatchRequest], allowed: Iterable[str]) -> list[str]:
    """Match fields (camelCase, as users wrote them) a router cannot express."""
    allowed_set = set(allowed)
    found: set[str] = set()
    for match in matches:
        found |= set(match.model_dump(by_alias=True, exclude_none=True)) - allowed_set - {"name"}
        if "method" in allowed_set and match.method is not None and match.method.exact is None:
            found.add("method (only exact)")
    return sorted(found)


def match_problem(router: str, matches: Sequence[HTTPMatchRequest], allowed: Iterable[str]) -> str | None:
    fields = unexpressible(matches, allowed)
    if fields:
        return f"router {router} cannot match on {', '.join(fields)}"
    return None


def split_with_match_problem(router: str, routes: RouteState) -> str | None:
    """SMI semantics: a split with matches sends matching requests to its backends and all others to
    the apex (primary) service, so a header route cannot be combined with a partial weight."""
    if routes.match and 0 < routes.canary_weight < 100:
        return (
            f"router {router} cannot combine a header route with a weighted split "
            f"(canary weight {routes.canary_weight}%): SMI routes unmatched requests to the apex service"
        )
    return None


def header_route_active(routes: RouteState) -> bool:
    """Whether the header route changes anything: at canary weight 100 every request goes there anyway."""
    return bool(routes.match) and routes.canary_weight < 100


class ObjectRouter(ABC):
    """A Router writing Kubernetes objects: apply the desired ones, then remove the ones it no longer
    needs (the HTTPRouteGroup after A/B ends), so a stale match can never keep routing."""

    name: str = ""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    @abstractmethod
    def unsupported(self, routes: RouteState) -> str | None: ...

    @abstractmethod
    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]: ...

    def managed(self, canary: Canary) -> list[ObjectKey]:
        """Every object this router may write for ``canary``; those not desired now are deleted."""
        return []

    async def apply(self, canary: Canary, routes: RouteState) -> None:
        reason = self.unsupported(routes)
        if reason is not None:
            raise UnsupportedRoutes(reason)
        wanted = await self.desired(canary, routes)
        # Referenced objects (route groups) come before the objects referring to them in ``wanted``.
        for obj in wanted:
            await self.objects.apply(obj)
        keep = {key(obj) for obj in wanted}
        for stale in self.managed(canary):
            if stale not in keep and await self.objects.get(*stale) is not None:
                await self.objects.delete(*stale)
