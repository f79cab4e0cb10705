"""What every router shares: object metadata, match translation, and the apply/prune loop.

Each router module has a pure ``desired(canary, routes, ...) -> list[dict]`` (the exact objects, so
golden tests can pin them) and a thin class over ``ObjectRouter`` that writes them through ``Objects``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from canaryctl.api.models import Canary, HTTPMatchRequest, Phase, StringMatch
from canaryctl.api.owned import metadata as metadata  # re-exported: every router module uses them
from canaryctl.api.owned import namespace as namespace
from canaryctl.drift import ObjectKey as ObjectKey  # re-exported for the routers
from canaryctl.drift import converge, key
from canaryctl.engine.types import RouteState
from canaryctl.ports import Objects

Obj = dict[str, Any]

_REGEX_SPECIALS = frozenset(".^$*+?()[]{}|\\")


class UnsupportedRoutes(ValueError):
    """Raised by ``apply`` for a RouteState the router cannot express exactly (never a silent no-op)."""


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


# --- session affinity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StickyCookie:
    """One cookie of analysis.sessionAffinity: ``name=value`` as clients send it back, and the
    Set-Cookie value that hands it out (or, for an expired one, deletes it)."""

    name: str
    value: str
    set_cookie: str

    @property
    def regex(self) -> str:
        """RE2, matched against the whole Cookie header: this exact pair among any others."""
        return f"(.*; ?)?{escape_regex(self.name)}={self.value}(;.*)?"


@dataclass(frozen=True)
class Stickiness:
    """What a router writes for session affinity in one routing state: while the canary takes traffic,
    the canary (and, with primaryCookieName, the primary) hand out a cookie that pins the client to
    them; once it takes none, the last rollout's canary cookie is deleted from clients that show it."""

    canary: StickyCookie | None = None
    primary: StickyCookie | None = None
    expired: StickyCookie | None = None

    def pinned(self) -> Iterator[tuple[StickyCookie, bool]]:
        """The cookies handed out, each with whether it pins to the primary."""
        for cookie, primary in ((self.canary, False), (self.primary, True)):
            if cookie is not None:
                yield cookie, primary


def cookie_matches(canary: Canary, cookie: StickyCookie) -> list[HTTPMatchRequest]:
    """The cookie ANDed with spec.service.match, as Flagger's mergeMatchConditions does."""
    pinned = HTTPMatchRequest.model_validate({"headers": {"Cookie": {"regex": cookie.regex}}})
    return merge_matches([pinned], canary.spec.service.match)


def _cookie_value(canary: Canary, revision: str, name: str) -> str:
    """Flagger draws a random value per rollout and keeps it in the status; this one is derived from the
    Canary's uid and the revision under analysis, so it is the same on every tick and replica."""
    identity = (canary.metadata.model_extra or {}).get("uid") or f"{namespace(canary)}/{canary.metadata.name}"
    return hashlib.sha256(f"{identity}/{revision}/{name}".encode()).hexdigest()[:16]


def stickiness(canary: Canary, routes: RouteState) -> Stickiness | None:
    """The cookies for ``routes``, or None without analysis.sessionAffinity."""
    analysis = canary.spec.effective_analysis
    affinity = analysis.session_affinity
    if affinity is None:
        return None
    status = canary.status
    revision = status.last_applied_spec if status is not None else None
    if routes.canary_weight > 0 or header_route_active(routes):

        def handed_out(name: str, max_age: int) -> StickyCookie:
            value = _cookie_value(canary, revision or "", name)
            return StickyCookie(name, value, affinity.set_cookie(f"{name}={value}", max_age))

        primary = None
        if affinity.primary_cookie_name:  # Flagger: the primary's cookie lasts one analysis interval
            interval = max(1, math.ceil(analysis.interval_seconds))
            primary = handed_out(affinity.primary_cookie_name, interval)
        return Stickiness(canary=handed_out(affinity.cookie_name, affinity.max_age), primary=primary)
    phase = status.phase if status is not None else None
    if revision is None or phase in (None, Phase.INITIALIZING, Phase.INITIALIZED):
        return Stickiness()  # no rollout has handed out a cookie yet
    name = affinity.cookie_name
    value = _cookie_value(canary, revision, name)
    return Stickiness(expired=StickyCookie(name, value, f"{name}={value}; Max-Age=-1"))


class ObjectRouter(ABC):
    """A Router writing Kubernetes objects: apply the desired ones where they drifted, then remove the
    ones it no longer needs (the HTTPRouteGroup after A/B ends), so a stale match can never keep
    routing. Applying an unchanged state writes nothing, so the operator re-applies it every tick."""

    name: str = ""
    # Whether ``desired`` objects are whole (canaryctl writes every field it sets in them).
    whole_objects: ClassVar[bool] = True
    # Whether the router can pin clients to a side by cookie (analysis.sessionAffinity).
    session_affinity: ClassVar[bool] = False
    # Whether the router sets the apex Service's selector (else the workloads keep it on the primary).
    owns_apex_selector: ClassVar[bool] = False

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    @abstractmethod
    def unsupported(self, routes: RouteState) -> str | None: ...

    def spec_problem(self, canary: Canary) -> str | None:
        """What this router cannot work with in the Canary's spec outside the steps (a missing
        ingressRef), with the field path; None when nothing."""
        return None

    @abstractmethod
    async def desired(self, canary: Canary, routes: RouteState) -> list[Obj]: ...

    def managed(self, canary: Canary) -> list[ObjectKey]:
        """Every object this router may write for ``canary``; those not desired now are deleted."""
        return []

    async def apply(self, canary: Canary, routes: RouteState) -> None:
        reason = self.spec_problem(canary) or self.unsupported(routes)
        if reason is not None:
            raise UnsupportedRoutes(reason)
        wanted = await self.desired(canary, routes)
        # Referenced objects (route groups) come before the objects referring to them in ``wanted``.
        await converge(self.objects, *wanted, whole=self.whole_objects)
        keep = {key(obj) for obj in wanted}
        unwanted = [stale for stale in self.managed(canary) if stale not in keep]
        for stale, found in zip(
            unwanted, await asyncio.gather(*(self.objects.get(*k) for k in unwanted)), strict=True
        ):
            if found is not None:
                await self.objects.delete(*stale)
