"""ingress-nginx: ``<ingress>-canary``, a copy of the Ingress named by ``spec.ingressRef`` routing to
``<apex>-canary`` and carrying ingress-nginx's canary annotations (Flagger's nginx provider).

ingress-nginx merges an Ingress annotated ``canary: "true"`` into the one serving the same host and
path: ``canary-weight`` percent of its requests go to the canary's backend, and before the weight is
applied ``canary-by-header`` (with ``-value`` or ``-pattern``) or ``canary-by-cookie`` send matching
requests there. ``analysis.match`` maps as in Flagger: a header named ``cookie`` becomes
canary-by-cookie, its exact value the cookie's *name* (ingress-nginx routes a request whose cookie of
that name says ``always``); any other header becomes canary-by-header, an exact value
canary-by-header-value and any other match canary-by-header-pattern (an anchored regex where Flagger
writes nothing for prefix and suffix). ingress-nginx ORs the header and the cookie and has one of
each, so each match names one header, and there is at most one header and one cookie.

While the canary takes no traffic (weight 0, no header route) the copy says ``canary: "false"`` and
carries no other canary annotation, as Flagger writes it between rollouts. No mirror, no faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from canaryctl.api.models import Canary, HTTPMatchRequest
from canaryctl.engine.types import RouteState
from canaryctl_providers.routers.common import Obj, as_regex, header_route_active, match_problem
from canaryctl_providers.routers.edge import (
    INGRESS_API,
    IngressCopyRouter,
    copied_metadata,
    ingress_copy,
    ingress_name,
    mirror_or_fault_problem,
)

PREFIX: Final = "nginx.ingress.kubernetes.io"
CANARY: Final = f"{PREFIX}/canary"
WEIGHT: Final = f"{CANARY}-weight"
BY_HEADER: Final = f"{CANARY}-by-header"
BY_HEADER_VALUE: Final = f"{BY_HEADER}-value"
BY_HEADER_PATTERN: Final = f"{BY_HEADER}-pattern"
BY_COOKIE: Final = f"{CANARY}-by-cookie"
COOKIE: Final = "cookie"


def _header_annotations(matches: Sequence[HTTPMatchRequest]) -> dict[str, str]:
    out: dict[str, str] = {}
    for match in matches:
        for header, value in (match.headers or {}).items():
            if header.lower() == COOKIE:
                out[BY_COOKIE] = value.exact or ""
            elif value.exact is not None:
                out |= {BY_HEADER: header, BY_HEADER_VALUE: value.exact}
            else:
                out |= {BY_HEADER: header, BY_HEADER_PATTERN: as_regex(value)}
    return out


def canary_annotations(routes: RouteState) -> dict[str, str]:
    """ingress-nginx's canary annotations for ``routes``."""
    if header_route_active(routes):
        return {CANARY: "true", WEIGHT: str(routes.canary_weight), **_header_annotations(routes.match)}
    if routes.canary_weight > 0:
        return {CANARY: "true", WEIGHT: str(routes.canary_weight)}
    return {CANARY: "false"}


def header_problem(router: str, matches: Sequence[HTTPMatchRequest]) -> str | None:
    """What ingress-nginx's one canary-by-header OR one canary-by-cookie cannot say."""
    problem = match_problem(router, matches, ("headers",))
    if problem is not None:
        return problem
    headers: set[str] = set()
    cookies: set[str] = set()
    for match in matches:
        if len(match.headers or {}) != 1:
            return (
                f"router {router} needs each match to name exactly one header or the cookie "
                "(ingress-nginx's canary-by-header and canary-by-cookie are alternatives)"
            )
        ((header, value),) = (match.headers or {}).items()
        if header.lower() != COOKIE:
            headers.add(f"{header.lower()}={value.model_dump_json(exclude_none=True)}")
        elif value.exact is None:
            return (
                f"router {router} matches a cookie by its name only (cookie: {{exact: <name>}}; "
                "ingress-nginx sends requests whose cookie of that name is 'always' to the canary)"
            )
        else:
            cookies.add(value.exact)
    if len(headers) > 1 or len(cookies) > 1:
        return (
            f"router {router} can route by one header and one cookie "
            "(ingress-nginx has one canary-by-header and one canary-by-cookie)"
        )
    return None


class NginxRouter(IngressCopyRouter):
    name = "nginx"

    @staticmethod
    def canary_ingress(canary: Canary, source: Obj, routes: RouteState) -> Obj:
        """``source`` (the user's Ingress) with its apex backends pointed at ``<apex>-canary`` and
        ingress-nginx's canary annotations replacing any it carried."""
        spec, found = ingress_copy(canary, source)
        for _, path in found:
            path["backend"]["service"]["name"] = canary.spec.side_service(False)
        name = f"{ingress_name(canary)}-canary"
        meta = copied_metadata(canary, source, name, drop=(CANARY,), add=canary_annotations(routes))
        return {"apiVersion": INGRESS_API, "kind": "Ingress", "metadata": meta, "spec": spec}

    def unsupported(self, routes: RouteState) -> str | None:
        return mirror_or_fault_problem(
            self.name, routes, "ingress-nginx's canary annotations have no mirror", "ingress-nginx has none"
        ) or header_problem(self.name, routes.match)
