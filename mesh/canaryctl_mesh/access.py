"""SMI TrafficTarget (access.smi-spec.io v1alpha1-3) + HTTPRouteGroup + TCPRoute → Envoy RBAC for sidecars.

SMI access control is enforced on the server side and is additive: once any TrafficTarget selects a
destination (a ServiceAccount), that destination's sidecar refuses every caller and every request no
TrafficTarget allows; a destination no TrafficTarget selects keeps accepting everything. Callers are
named by the SPIFFE ID of their ServiceAccount (``spiffe://<trust domain>/ns/<ns>/sa/<sa>``), which
Envoy reads from the peer's mTLS certificate (``authenticated.principal_name``): a caller that
presents no mesh certificate matches no source and is refused.

What a rule allows depends on how the sidecar sees the connection: HTTP (the inbound HTTP chain)
is allowed by HTTPRouteGroup matches (pathRegex, methods, headers; RE2 full matches, as routing
reads them); anything else (the TCP chain) by TCPRoutes, on their ``spec.matches.ports`` (v1alpha4)
or on any port. A TCPRoute does not open HTTP on its ports, so a caller granted only ``GET /metrics``
cannot reach the rest of the API on the same port. The v1alpha1/v1alpha2 ``destination.port`` narrows
every rule of its target to that port. A denied HTTP request is answered 403; a denied TCP connection
is closed.

HTTP rules ride on the inbound route configuration (``RBACPerRoute`` for the rule-less RBAC filter
every inbound HTTP chain has), so a change reaches connections already open at their next request;
TCP rules are a network filter in the listener and apply to connections opened after a change.

A TrafficTarget only governs destinations in its own namespace (a tenant cannot open or close
another tenant's workloads) and only names routes in its own namespace. An invalid one is refused
alone (with the reason); if its destination can still be told, that destination stays selected and
the refused target grants nothing, so a typo closes access instead of opening it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from canaryctl_mesh.config import HTTP_RBAC_FILTER, HeaderMatch, Resource
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Identity, workload_key
from canaryctl_mesh.regex import envoy_regex_problem
from canaryctl_mesh.translate import (
    ObjectRef,
    Refusal,
    _header_matches,
    _name,
    _namespace,
    route_group_matches,
)

Object = Mapping[str, Any]

ACCESS_GROUP = "access.smi-spec.io"
TRAFFIC_TARGET = "TrafficTarget"
TCP_ROUTE = "TCPRoute"
HTTP_ROUTE_GROUP = "HTTPRouteGroup"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NETWORK_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
MAX_RULES = 1000
"""Permissions and principals one destination's RBAC may carry, over all its TrafficTargets: every
user-written list ends up in each of its sidecars' listener."""
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class HttpRule:
    """One HTTPRouteGroup match: all given conditions must hold."""

    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    """Upper-case; empty for any method (SMI's ``"*"``)."""
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class Grant:
    """What one TrafficTarget lets its sources do at its destination."""

    target: str
    """The TrafficTarget's name (Envoy's policy name, so stats and logs say which target allowed)."""
    sources: tuple[str, ...]
    """SPIFFE IDs of the source ServiceAccounts."""
    http: tuple[HttpRule, ...] = ()
    tcp_ports: tuple[int, ...] | None = None
    """Ports TCP is allowed on: None for no TCP, () for any port."""
    port: int | None = None
    """v1alpha1/v1alpha2 ``destination.port``: every rule holds on this port only."""


@dataclass(frozen=True)
class Authorization:
    """Everything the TrafficTargets selecting one destination allow; anything else is refused."""

    destination: Identity
    grants: tuple[Grant, ...] = ()

    @property
    def key(self) -> str:
        """The ADS snapshot key of the destination's sidecars (see `workload_key`)."""
        return workload_key(self.destination)


@dataclass
class AccessTranslation:
    authorizations: list[Authorization] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


class _Invalid(ValueError):
    pass


def _body(target: Object) -> Mapping[str, Any]:
    """v1alpha2+ keep destination, rules and sources under spec; v1alpha1 at the top, rules as specs."""
    spec = target.get("spec")
    if isinstance(spec, Mapping) and spec:
        return spec
    return {
        "destination": target.get("destination"),
        "sources": target.get("sources"),
        "rules": target.get("specs"),
    }


def _service_account(ref: Any, where: str, namespace: str) -> Identity:
    if not isinstance(ref, Mapping):
        raise _Invalid(f"{where}: expected an object with kind ServiceAccount and name")
    if ref.get("kind") != "ServiceAccount":
        raise _Invalid(f"{where}.kind: {ref.get('kind')!r} is not supported; use ServiceAccount")
    name, ns = str(ref.get("name") or ""), str(ref.get("namespace") or namespace)
    for field_name, value in (("name", name), ("namespace", ns)):
        if not _NAME.match(value):
            raise _Invalid(f"{where}.{field_name}: {value!r} is not a Kubernetes name")
    return Identity(ns, name)


def _destination(target: Object) -> Identity:
    """The destination a target selects; only ServiceAccounts of the target's own namespace."""
    namespace = _namespace(target)
    identity = _service_account(_body(target).get("destination"), "destination", namespace)
    if identity.namespace != namespace:
        raise _Invalid(
            f"destination.namespace: {identity.namespace!r}: a TrafficTarget governs destinations in its "
            f"own namespace {namespace!r} only"
        )
    return identity


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _Invalid(f"{where}: {value!r} is not a port number")
    if not 1 <= int(value) <= 65535:
        raise _Invalid(f"{where}: {value} is not a port number (1-65535)")
    return int(value)


def _check_regex(value: str, where: str) -> str:
    """What Envoy would refuse, for the whole listener, is refused here: RE2 syntax and size."""
    problem = envoy_regex_problem(value)
    if problem is not None:
        raise _Invalid(f"{where}: {problem}: {value[:100]!r}")
    return value


def _methods_regex(methods: Iterable[str]) -> str:
    return "|".join(re.escape(m) for m in methods)


def _http_rules(group: Object, wanted: list[str] | None, where: str) -> tuple[HttpRule, ...]:
    matches = route_group_matches(group)
    by_name = {str(m.get("name")): m for m in matches if isinstance(m, Mapping)}
    if wanted is not None:
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise _Invalid(f"{where}.matches: {unknown} are not matches of HTTPRouteGroup {_name(group)}")
        chosen = [by_name[name] for name in wanted]
    else:
        chosen = list(by_name.values())
    rules = []
    for match in chosen:
        at = f"HTTPRouteGroup {_name(group)} match {match.get('name')!r}"
        methods = [str(m).upper() for m in match.get("methods") or ()]
        path = match.get("pathRegex")
        try:
            headers = _header_matches(match.get("headers"))
        except ValueError as error:
            raise _Invalid(f"{at}: {error}") from error
        rule = HttpRule(
            path_regex=_check_regex(str(path), f"{at} pathRegex") if path not in (None, "") else None,
            methods=() if "*" in methods else tuple(sorted(set(methods))),
            headers=headers,
        )
        if rule.methods:
            _check_regex(_methods_regex(rule.methods), f"{at} methods")
        rules.append(rule)
    return tuple(rules)


def _tcp_ports(route: Object, where: str) -> tuple[int, ...]:
    """v1alpha4 ``spec.matches.ports`` (empty or absent: every port); earlier TCPRoutes have no spec."""
    matches = (route.get("spec") or {}).get("matches") or {}
    if not isinstance(matches, Mapping):
        raise _Invalid(f"{where}: TCPRoute {_name(route)} spec.matches must be an object with ports")
    ports = matches.get("ports") or []
    if not isinstance(ports, list):
        raise _Invalid(f"{where}: TCPRoute {_name(route)} spec.matches.ports must be a list")
    return tuple(sorted({_port(p, f"TCPRoute {_name(route)} spec.matches.ports") for p in ports}))


def _grant(
    target: Object, groups: Mapping[str, Object], tcp_routes: Mapping[str, Object], trust_domain: str
) -> Grant:
    namespace, body = _namespace(target), _body(target)
    destination = body.get("destination") or {}
    port = _port(destination["port"], "destination.port") if destination.get("port") is not None else None
    raw_sources = body.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise _Invalid("sources: at least one source is required")
    sources = tuple(
        dict.fromkeys(
            _service_account(s, f"sources[{i}]", namespace).spiffe_id(trust_domain)
            for i, s in enumerate(raw_sources)
        )
    )
    raw_rules = body.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _Invalid("rules: at least one rule is required")
    http: list[HttpRule] = []
    tcp_ports: set[int] = set()
    tcp_rules = tcp_any = False
    for index, rule in enumerate(raw_rules):
        where = f"rules[{index}]"
        if not isinstance(rule, Mapping):
            raise _Invalid(f"{where}: expected an object with kind and name")
        kind, name = rule.get("kind"), str(rule.get("name") or "")
        if kind == HTTP_ROUTE_GROUP:
            if name not in groups:
                raise _Invalid(f"{where}: HTTPRouteGroup {name!r} not found in namespace {namespace}")
            wanted = rule.get("matches")
            http += _http_rules(groups[name], [str(m) for m in wanted] if wanted else None, where)
        elif kind == TCP_ROUTE:
            if name not in tcp_routes:
                raise _Invalid(f"{where}: TCPRoute {name!r} not found in namespace {namespace}")
            ports = _tcp_ports(tcp_routes[name], where)
            tcp_rules, tcp_any = True, tcp_any or not ports
            tcp_ports.update(ports)
        else:
            raise _Invalid(f"{where}.kind: {kind!r} is not supported; use HTTPRouteGroup or TCPRoute")
    return Grant(
        target=_name(target),
        sources=sources,
        http=tuple(dict.fromkeys(http)),
        tcp_ports=None if not tcp_rules else () if tcp_any else tuple(sorted(tcp_ports)),
        port=port,
    )


def translate_access(
    objects: Iterable[Object], trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> AccessTranslation:
    """One namespace's TrafficTargets (and the routes they name) → one Authorization per destination,
    its sources named by their SPIFFE IDs in `trust_domain`."""
    items = list(objects)
    by_kind: dict[str, dict[str, Object]] = {HTTP_ROUTE_GROUP: {}, TCP_ROUTE: {}}
    targets = []
    for obj in items:
        kind = obj.get("kind")
        if kind in by_kind:
            by_kind[str(kind)][_name(obj)] = obj
        elif kind == TRAFFIC_TARGET and str(obj.get("apiVersion", "")).startswith(f"{ACCESS_GROUP}/"):
            targets.append(obj)
    result = AccessTranslation()
    grants: dict[Identity, list[tuple[ObjectRef, Grant]]] = {}
    for target in sorted(targets, key=_name):
        ref = ObjectRef.of(target)
        try:
            destination = _destination(target)
        except _Invalid as error:
            result.refused.append(Refusal(ref, str(error)))
            continue
        selected = grants.setdefault(destination, [])
        try:
            selected.append(
                (ref, _grant(target, by_kind[HTTP_ROUTE_GROUP], by_kind[TCP_ROUTE], trust_domain))
            )
        except (_Invalid, TypeError) as error:
            message = f"{error}; it allows nothing, and {destination.service_account} stays selected"
            result.refused.append(Refusal(ref, message))
    for destination, selected in sorted(grants.items(), key=lambda item: item[0].service_account):
        count = sum(len(g.sources) + len(g.http) + len(g.tcp_ports or ()) for _, g in selected)
        if count > MAX_RULES:
            for ref, _ in selected:
                message = (
                    f"the TrafficTargets of {destination.service_account} name {count} sources and rules, "
                    f"more than {MAX_RULES}; {destination.service_account} is closed"
                )
                result.refused.append(Refusal(ref, message))
            selected = []
        result.authorizations.append(Authorization(destination, tuple(g for _, g in selected)))
    return result


# ---------------------------------------------------------------------------------------------------
# Envoy RBAC
# ---------------------------------------------------------------------------------------------------


def _principals(grant: Grant) -> list[dict[str, Any]]:
    return [{"authenticated": {"principal_name": {"exact": source}}} for source in grant.sources]


def _regex(value: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": value}}


def _http_permission(rule: HttpRule, port: int | None) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if port is not None:
        conditions.append({"destination_port": port})
    if rule.path_regex is not None:
        conditions.append({"url_path": {"path": _regex(rule.path_regex)}})
    if rule.methods:
        conditions.append(
            {"header": {"name": ":method", "string_match": _regex(_methods_regex(rule.methods))}}
        )
    conditions += [{"header": {"name": h.name, "string_match": _regex(str(h.regex))}} for h in rule.headers]
    return {"and_rules": {"rules": conditions}} if conditions else {"any": True}


def _tcp_permissions(grant: Grant) -> list[dict[str, Any]]:
    if grant.tcp_ports is None:
        return []
    if not grant.tcp_ports:
        return [{"destination_port": grant.port}] if grant.port is not None else [{"any": True}]
    return [{"destination_port": p} for p in grant.tcp_ports if grant.port in (None, p)]


def _rules(policies: dict[str, Any]) -> dict[str, Any]:
    """ALLOW with these policies: anything none of them matches is denied (no policies: everything)."""
    return {"action": "ALLOW", "policies": policies}


def http_rbac_per_route(authorization: Authorization) -> dict[str, Any]:
    """What turns the inbound HTTP chain's rule-less RBAC filter (`config.authorization_filter`) on:
    requests no grant allows are answered 403."""
    policies = {
        g.target: {"permissions": [_http_permission(r, g.port) for r in g.http], "principals": _principals(g)}
        for g in authorization.grants
        if g.http
    }
    return {"@type": HTTP_RBAC_PER_ROUTE_TYPE, "rbac": {"rules": _rules(policies)}}


def network_rbac(authorization: Authorization, stat_prefix: str) -> dict[str, Any]:
    """The inbound TCP chain's filter: connections no TCPRoute grant allows are closed."""
    policies = {}
    for grant in authorization.grants:
        permissions = _tcp_permissions(grant)
        if permissions:
            policies[grant.target] = {"permissions": permissions, "principals": _principals(grant)}
    return {
        "name": NETWORK_RBAC_FILTER,
        "typed_config": {"@type": NETWORK_RBAC_TYPE, "stat_prefix": stat_prefix, "rules": _rules(policies)},
    }


def authorized_routes(route_config: Resource, authorization: Authorization) -> Resource:
    """A copy of the inbound route configuration enforcing `authorization` on every virtual host."""
    authorized = copy.deepcopy(route_config)
    for host in authorized.get("virtual_hosts") or []:
        host.setdefault("typed_per_filter_config", {})[HTTP_RBAC_FILTER] = http_rbac_per_route(authorization)
    return authorized


def authorized_listener(listener: Resource, authorization: Authorization) -> Resource:
    """A copy of the inbound listener with the network RBAC filter before each TCP proxy. Its HTTP
    chains are left as they are (their RBAC comes with the routes), so Envoy keeps their connections
    when the listener changes."""
    authorized = copy.deepcopy(listener)
    chains = [
        *(authorized.get("filter_chains") or []),
        *filter(None, [authorized.get("default_filter_chain")]),
    ]
    for chain in chains:
        filters = chain.get("filters") or []
        for index, network_filter in enumerate(filters):
            if network_filter.get("name") == TCP_PROXY_FILTER:
                stat_prefix = f"{chain.get('name') or listener['name']}_authz".replace("-", "_")
                filters.insert(index, network_rbac(authorization, stat_prefix))
                break
    return authorized
