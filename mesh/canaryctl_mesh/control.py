"""The mesh control plane's sync step: watched Kubernetes objects → one xDS view per namespace.

Whoever watches the cluster calls `update` with the objects of the namespaces that changed and then
`push`. Namespaces translate independently (a TrafficSplit only names objects in its own namespace),
so a change re-translates one namespace, not the mesh. An object that cannot be translated or
conflicts with an older one is refused alone (`refused`) and everything else keeps being routed.

A view is what the sidecars of one namespace get: the routes of their own namespace (short names
included) and the routes other namespaces export to them (qualified names only). Each routed service
is one virtual host, sent over VHDS (`canaryctl_mesh.ads`), so a weight change reaches a sidecar as
that one virtual host. Hosts and clusters are encoded once per change of their namespace and grouped
into parts (a namespace's routes as it sees them, and as each set of namespaces it exports to sees
them); a view is the union of the parts it may see, rebuilt only when one of those parts changed,
from its previous version by swapping the parts that changed. The view keeps its parts, so the
difference a sidecar is sent is found from the changed parts alone: a weight change costs each view
the changed namespace's part, not its whole table of every service in the mesh.

Listeners are the same for every view but for their opaque ports (`canaryctl_mesh.protocols`): a
namespace's Services declare them for its own sidecars only, so no namespace can turn protocol
detection off, and with it routing and metrics, for another namespace's traffic.

With `mtls` (the default mode, `config.PERMISSIVE` or `config.STRICT`) endpoints whose pod runs a
sidecar are reached over mTLS and inbound listeners terminate it; a namespace picks its own mode with
the MTLS_LABEL on its Namespace object (watched with the pods). What a sidecar passes through to its
original destination goes over mTLS too when that destination is a meshed pod (or a Service of
meshed pods) of a namespace its view may see: the peers (`config.Peer`) are outbound filter chains
and clusters, exported like a TrafficSplit without annotation (`default_export_to`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import any_pb2, json_format

from canaryctl_mesh import access, config, protocols
from canaryctl_mesh.ads import (
    VIRTUAL_HOST_TYPE,
    AdsServer,
    Entry,
    Snapshot,
    TypeSnapshot,
    digest,
    encode,
    encode_resources,
)
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN
from canaryctl_mesh.translate import (
    ALL_NAMESPACES,
    MeshRoute,
    ObjectRef,
    Refusal,
    Translation,
    mesh_peers,
    translate_namespace,
)

Object = Mapping[str, Any]
VHDS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
PLACEHOLDER_HOST = "mesh.canaryctl.invalid"
MTLS_LABEL = "mesh.canaryctl.dev/mtls"
"""Namespace label: ``permissive`` (plaintext from unmeshed clients still accepted) or ``strict``."""


_PeersKey = tuple[tuple[str, str], ...]
"""The namespaces (and their peers' versions) whose peers a view sees."""
_ListenerKey = tuple[tuple[int, ...], tuple[int, ...], str | None, _PeersKey]
"""(opaque ports, server-first ports, mTLS mode, peers) of a view's capture listeners."""


def _entry(resource: any_pb2.Any) -> Entry:
    return digest([resource.value]), resource


@dataclass(frozen=True)
class _EncodedRoute:
    route: MeshRoute
    name: str
    """The virtual host's resource name, ``outbound/<service>_<namespace>`` (and its name in Envoy)."""
    local_host: Entry
    """The virtual host as its own namespace sees it (short names too)."""
    remote_host: Entry
    clusters: tuple[tuple[str, Entry], ...]


def _virtual_host(spec: config.RouteSpec, name: str) -> Entry:
    host = config.build_route_config(config.OUTBOUND_ROUTE_NAME, [spec])["virtual_hosts"][0]
    try:
        parsed = json_format.ParseDict({**host, "name": name}, route_components_pb2.VirtualHost())
    except json_format.ParseError as error:
        raise ValueError(f"service {spec.service!r}: {error}") from error
    resource = any_pb2.Any()
    resource.Pack(parsed)
    return _entry(resource)


def _encode(route: MeshRoute) -> _EncodedRoute:
    clusters = []
    for cluster in config.build_clusters([route.spec]):
        try:
            clusters.append((str(cluster["name"]), _entry(json_format.ParseDict(cluster, any_pb2.Any()))))
        except json_format.ParseError as error:
            raise ValueError(f"cluster {cluster['name']!r}: {error}") from error
    name = f"{config.OUTBOUND_ROUTE_NAME}/{route.spec.service}"
    return _EncodedRoute(
        route,
        name,
        _virtual_host(route.spec_for(route.namespace), name),
        _virtual_host(route.spec, name),
        tuple(clusters),
    )


def _filter_chain(chain: Mapping[str, Any]) -> listener_components_pb2.FilterChain:
    """`chain` parsed, its address ranges (thousands, for the peers' chains) set directly: json_format
    took most of a pod change's CPU with them."""
    if "filter_chain_match" not in chain:
        return json_format.ParseDict(chain, listener_components_pb2.FilterChain())
    match = dict(chain["filter_chain_match"])
    ranges = match.pop("prefix_ranges", [])
    parsed = json_format.ParseDict(
        {**chain, "filter_chain_match": match}, listener_components_pb2.FilterChain()
    )
    for cidr in ranges:
        added = parsed.filter_chain_match.prefix_ranges.add()
        added.address_prefix = cidr["address_prefix"]
        added.prefix_len.value = cidr["prefix_len"]
    return parsed


def _placeholder_virtual_host() -> dict[str, Any]:
    """A virtual host no request names (``.invalid`` is reserved): Envoy passes an empty VHDS answer
    to wildcard subscriptions only, so without it a sidecar of a namespace with no routed service
    would wait out its 15 s initial fetch before it starts."""
    return {
        "@type": VIRTUAL_HOST_TYPE,
        "name": f"{config.OUTBOUND_ROUTE_NAME}/{PLACEHOLDER_HOST}",
        "domains": [PLACEHOLDER_HOST],
        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}],
    }


def _route_key(route: MeshRoute) -> str:
    return json.dumps(
        [route.namespace, sorted(route.export_to), route.short_hosts, route.spec.model_dump(mode="json")],
        sort_keys=True,
    )


def _namespace_of(obj: Object) -> str:
    """A Namespace object belongs to the namespace it is."""
    metadata = obj.get("metadata") or {}
    if obj.get("kind") == "Namespace":
        return str(metadata.get("name") or "default")
    return str(metadata.get("namespace") or "default")


def mtls_mode(objects: Iterable[Object], default: str) -> tuple[str, Refusal | None]:
    """The namespace's mode from its Namespace's MTLS_LABEL; an unknown value keeps `default`, refused."""
    for obj in objects:
        if obj.get("kind") != "Namespace":
            continue
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(MTLS_LABEL)
        if value is None or value in config.MTLS_MODES:
            return value or default, None
        message = f"label {MTLS_LABEL}={value!r}: use one of {', '.join(config.MTLS_MODES)}; kept {default}"
        return default, Refusal(ObjectRef.of(obj), message)
    return default, None


def _version(entries: Mapping[str, Entry]) -> str:
    return digest(f"{name}={version}".encode() for name, (version, _) in entries.items())


@dataclass(frozen=True)
class _Part:
    """Routes of `owner` as its own sidecars see them (`own`: short names too) or as the other
    namespaces in `seen_by` do."""

    owner: str
    own: bool
    seen_by: frozenset[str]
    hosts: dict[str, Entry]
    clusters: dict[str, Entry]
    hosts_version: str = field(init=False)
    clusters_version: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts_version", _version(self.hosts))
        object.__setattr__(self, "clusters_version", _version(self.clusters))

    def visible_to(self, namespace: str) -> bool:
        if self.own:
            return namespace == self.owner
        return namespace != self.owner and bool({namespace, ALL_NAMESPACES} & self.seen_by)


def _parts(owner: str, routes: Iterable[_EncodedRoute]) -> list[_Part]:
    """The owner's own view of its routes, and one part per distinct export set."""
    own: tuple[dict[str, Entry], dict[str, Entry]] = ({}, {})
    exported: dict[frozenset[str], tuple[dict[str, Entry], dict[str, Entry]]] = {}
    for encoded in sorted(routes, key=lambda e: e.name):
        shared = exported.setdefault(encoded.route.export_to, ({}, {}))
        own[0][encoded.name] = encoded.local_host
        shared[0][encoded.name] = encoded.remote_host
        for hosts_and_clusters in (own, shared):
            hosts_and_clusters[1].update(encoded.clusters)
    parts = [_Part(owner, True, frozenset({owner}), *own)] if own[0] else []
    parts += [_Part(owner, False, seen_by, *exported[seen_by]) for seen_by in sorted(exported, key=sorted)]
    return parts


class MeshControlPlane:
    def __init__(
        self,
        ads: AdsServer,
        ports: config.SidecarPorts | None = None,
        bind_host: str = "0.0.0.0",
        default_export_to: frozenset[str] = frozenset({ALL_NAMESPACES}),
        mtls: str | None = None,
        *,
        hold_until_update: bool = False,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        """`mtls` None: no mTLS (sidecars without SDS secrets, loopback tests, local runs).
        `hold_until_update`: a sidecar that connects before the first `update` is sent no view (meshd,
        until it has read the mesh: an empty view would take a reconnecting sidecar's routes away).
        `trust_domain`: that of the SPIFFE IDs sidecars expect of their peers and authorize."""
        if mtls is not None and mtls not in config.MTLS_MODES:
            raise ValueError(f"mTLS mode {mtls!r}: use one of {', '.join(config.MTLS_MODES)}")
        self.mtls = mtls
        self.trust_domain = trust_domain
        self.ads = ads
        self.ports = ports or config.SidecarPorts()
        self.bind_host = bind_host
        self.default_export_to = default_export_to
        self.refused: list[Refusal] = []
        """Objects left out at the last push, and why."""
        self.version = ""
        """Digest of everything routed and refused; changes whenever the mesh's config does."""
        self._holding = hold_until_update
        self._translations: dict[str, Translation] = {}
        self._encoded: dict[str, dict[str, _EncodedRoute]] = {}
        self._parts: dict[str, list[_Part]] = {}
        self._host_conflicts: list[Refusal] = []
        self._excluded: set[tuple[str, str]] = set()
        self._claims: dict[str, tuple[tuple[str, tuple[str, ...], ObjectRef], ...]] = {}
        """Each namespace's routed services, by name, with the hosts they claim."""
        self._namespace_versions: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[str]] = set()
        static = config.sidecar_resources(
            [], self.ports, bind_host=bind_host, mtls=mtls, trust_domain=trust_domain
        )
        for route_config in static.routes:
            if route_config["name"] == config.OUTBOUND_ROUTE_NAME:
                # The services' virtual hosts come over VHDS; unknown hosts keep passing through.
                route_config["vhds"] = {"config_source": VHDS_SOURCE}
        encoded = encode_resources(static)
        static_clusters = encoded[config.CLUSTER_TYPE]
        self._static_clusters = (static_clusters.version, static_clusters.entries)
        placeholder = encode(VIRTUAL_HOST_TYPE, [_placeholder_virtual_host()])
        self._placeholder_hosts = (placeholder.version, placeholder.entries)
        self._default_listeners = encoded[config.LISTENER_TYPE]
        self._listeners: dict[_ListenerKey, TypeSnapshot] = {}
        self._access: dict[str, list[access.Authorization]] = {}
        """Each namespace's authorized destinations (SMI TrafficTargets): their sidecars get a view of
        their own, the namespace's with authorization in the inbound listener."""
        self._authorized: dict[object, TypeSnapshot] = {}
        """Listeners (by ports, mode and authorization) and routes (by authorization) of workload views."""
        self._opaque_ports: dict[str, tuple[int, ...]] = {}
        """Ports a namespace's Services declare non-HTTP (with the defaults), where they add any."""
        self._server_first: dict[str, tuple[int, ...]] = {}
        """Ports a namespace's Services declare server-first (with the defaults), where they add any."""
        self._mtls_modes: dict[str, str] = {}
        """Namespaces whose mode is not the default."""
        self._peers: dict[str, tuple[str, tuple[config.Peer, ...]]] = {}
        """Each namespace's meshed addresses (with mTLS), and their version."""
        self._peer_sets: dict[_PeersKey, tuple[config.Peer, ...]] = {}
        """The peers a view sees, by the namespaces (and versions) they come from."""
        self._peer_clusters: dict[_PeersKey, tuple[str, dict[str, Entry]]] = {}
        self._parsed: dict[str, Entry] = {}
        """Peer clusters by name, encoded."""
        self._chains: dict[str, listener_components_pb2.FilterChain] = {}
        """Filter chains by their JSON, parsed."""
        self._static_routes = static.routes
        self._routes = encode(config.ROUTE_TYPE, static.routes)
        self._views: dict[str, tuple[tuple[str, ...], Snapshot]] = {}
        self._shared: dict[tuple[str, ...], TypeSnapshot] = {}
        """Merged snapshots by type and the versions of their parts."""
        self._workloads: dict[str, Snapshot] = {}
        """The workload views last set, by snapshot key (``<namespace>/<service account>``)."""
        self._push_lock = asyncio.Lock()
        ads.on_new_view = self._view_requested

    # -- translation ---------------------------------------------------------------------------------

    def update(self, namespaces: Mapping[str, Iterable[Object]]) -> None:
        """Translate these namespaces' objects anew (an empty list forgets the namespace); ends the hold."""
        self._holding = False
        claims_changed = False
        for namespace, objects in namespaces.items():
            items = list(objects)
            if not items:
                claims_changed = claims_changed or namespace in self._claims
                for index in (
                    self._translations,
                    self._encoded,
                    self._opaque_ports,
                    self._server_first,
                    self._claims,
                    self._mtls_modes,
                    self._access,
                    self._peers,
                ):
                    index.pop(namespace, None)
                self._namespace_versions.pop(namespace, None)
                continue
            opaque = protocols.opaque_ports(items)
            if opaque != config.DEFAULT_OPAQUE_PORTS:
                self._opaque_ports[namespace] = opaque
            else:
                self._opaque_ports.pop(namespace, None)
            server_first = protocols.server_first_ports(items)
            if server_first != config.DEFAULT_SERVER_FIRST_PORTS:
                self._server_first[namespace] = server_first
            else:
                self._server_first.pop(namespace, None)
            translation = translate_namespace(
                items, self.default_export_to, self.mtls is not None, self.trust_domain
            )
            if self.mtls is not None:
                mode, refusal = mtls_mode(items, self.mtls)
                translation.refused += [refusal] if refusal else []
                if mode != self.mtls:
                    self._mtls_modes[namespace] = mode
                else:
                    self._mtls_modes.pop(namespace, None)
            self._update_peers(namespace, items, translation)
            authorized = access.translate_access(items, self.trust_domain)
            translation.refused += authorized.refused
            self._access[namespace] = authorized.authorizations
            previous = self._encoded.get(namespace, {})
            encoded: dict[str, _EncodedRoute] = {}
            for route in translation.routes:
                key = _route_key(route)
                try:
                    encoded[key] = previous.get(key) or _encode(route)
                except ValueError as error:  # Envoy would refuse it: leave this one service out
                    translation.refused.append(Refusal(route.split, str(error)))
            translation.routes = [e.route for e in encoded.values()]
            self._translations[namespace] = translation
            self._encoded[namespace] = encoded
            claims = tuple(sorted((r.spec.service, tuple(r.spec.hosts), r.split) for r in translation.routes))
            claims_changed = claims_changed or claims != self._claims.get(namespace)
            self._claims[namespace] = claims
            self._namespace_versions[namespace] = self._namespace_version(namespace)
        excluded = self._excluded
        if claims_changed:  # a weight change claims no new host: every claim is checked only then
            self._check_hosts()
        self.version = digest(self._namespace_versions[namespace] for namespace in sorted(self._translations))
        changed = set(namespaces) | {namespace for namespace, _ in excluded ^ self._excluded}
        for namespace in changed:
            routes = [
                e
                for e in self._encoded.get(namespace, {}).values()
                if (namespace, e.route.spec.service) not in self._excluded
            ]
            self._parts[namespace] = _parts(namespace, routes)
            if not self._parts[namespace]:
                del self._parts[namespace]

    def _update_peers(self, namespace: str, items: list[Object], translation: Translation) -> None:
        if self.mtls is None:
            return
        routed = [host for route in translation.routes for host in route.spec.hosts]
        server_first = self._server_first.get(namespace, config.DEFAULT_SERVER_FIRST_PORTS)
        if (self._mtls_modes.get(namespace) or self.mtls) == config.STRICT:
            server_first = ()  # strict sidecars look for mTLS on server-first ports too
        peers = mesh_peers(items, routed, server_first, self.trust_domain)
        if peers:
            self._peers[namespace] = (digest([repr(peers).encode()]), peers)
        else:
            self._peers.pop(namespace, None)

    def _visible_peers(self, namespace: str) -> _PeersKey:
        """The key of the peers `namespace` may see: its own and those of namespaces exporting to it
        (each address once, the first namespace's by name)."""
        everywhere = bool({namespace, ALL_NAMESPACES} & self.default_export_to)
        key = tuple(
            (owner, version)
            for owner, (version, _) in sorted(self._peers.items())
            if owner == namespace or everywhere
        )
        if key not in self._peer_sets:
            merged: dict[str, config.Peer] = {}
            for owner, _ in key:
                for peer in self._peers[owner][1]:
                    merged.setdefault(peer.address, peer)
            self._peer_sets[key] = tuple(sorted(merged.values()))
        return key

    def _peer_clusters_of(self, key: _PeersKey) -> tuple[str, dict[str, Entry]]:
        found = self._peer_clusters.get(key)
        if found is None:
            entries = {}
            for cluster in config.peer_clusters(self._peer_sets[key]):
                name = str(cluster["name"])
                entry = self._parsed.get(name)  # a peer cluster's name says all it holds
                if entry is None:
                    entry = self._parsed[name] = _entry(json_format.ParseDict(cluster, any_pb2.Any()))
                entries[name] = entry
            found = self._peer_clusters[key] = (_version(entries), entries)
        return found

    def _encode_listeners(self, listeners: list[dict[str, Any]]) -> TypeSnapshot:
        """`encode` with each filter chain parsed once: the peers' chains are most of a listener, and a
        change of one set of peers makes only its chains new."""
        encoded = []
        used: set[str] = set()
        for listener in listeners:
            rest = {k: v for k, v in listener.items() if k not in ("@type", "filter_chains")}
            try:
                parsed = json_format.ParseDict(rest, listener_pb2.Listener())
                for chain in listener.get("filter_chains") or []:
                    text = json.dumps(chain, sort_keys=True)
                    used.add(text)
                    found = self._chains.get(text)
                    if found is None:
                        found = self._chains[text] = _filter_chain(chain)
                    parsed.filter_chains.append(found)
            except json_format.ParseError as error:
                raise ValueError(f"invalid listener {listener.get('name')!r}: {error}") from error
            packed = any_pb2.Any()
            packed.Pack(parsed)
            encoded.append((str(listener["name"]), packed))
        if len(self._chains) > 2 * len(used) + 1000:
            self._chains = {text: chain for text, chain in self._chains.items() if text in used}
        return TypeSnapshot.of(encoded)

    def _check_hosts(self) -> None:
        """A qualified name or ClusterIP claimed twice (only possible with hand-made ClusterIPs) keeps its
        first claimer, by namespace and service, and refuses the other: Envoy would refuse the whole
        route configuration."""
        claimed: dict[str, str] = {}
        self._host_conflicts = []
        self._excluded = set()
        for namespace in sorted(self._claims):
            for service, hosts, split in self._claims[namespace]:
                clash = next((h for h in hosts if claimed.get(h, service) != service), None)
                if clash is None:
                    claimed.update(dict.fromkeys(hosts, service))
                    continue
                self._excluded.add((namespace, service))
                message = f"host {clash!r} is already routed to {claimed[clash]}"
                self._host_conflicts.append(Refusal(split, message))

    def _namespace_version(self, namespace: str) -> bytes:
        """What of a namespace goes into `version`: its routes, refusals and opaque ports."""
        parts = [key.encode() for key in sorted(self._encoded[namespace])]
        parts += [f"{r.ref}: {r.message}".encode() for r in self._translations[namespace].refused]
        parts.append(f"opaque ports {self._opaque_ports.get(namespace)}".encode())
        parts.append(f"server-first ports {self._server_first.get(namespace)}".encode())
        parts.append(f"mtls {self._mtls_modes.get(namespace)}".encode())
        parts.append(f"peers {self._peers.get(namespace, ('',))[0]}".encode())
        parts += [repr(authorization).encode() for authorization in self._access.get(namespace, ())]
        return digest(parts).encode()

    # -- views ---------------------------------------------------------------------------------------

    def _view(self, namespace: str) -> Snapshot:
        """The parts `namespace` may see, merged; the previous view when none of them changed."""
        parts = [p for owner in sorted(self._parts) for p in self._parts[owner] if p.visible_to(namespace)]
        listeners = self._listeners_of(namespace)
        peer_clusters = self._peer_clusters_of(self._visible_peers(namespace))
        key = (
            listeners.version,
            peer_clusters[0],
            *[v for p in parts for v in (p.hosts_version, p.clusters_version)],
        )
        cached = self._views.get(namespace)
        if cached is not None and cached[0] == key:
            return cached[1]
        previous = cached[1] if cached is not None else {}
        clusters = [(p.clusters_version, p.clusters) for p in parts]
        clusters += [peer_clusters] if peer_clusters[1] else []
        view = {
            config.CLUSTER_TYPE: self._merged(
                config.CLUSTER_TYPE, [*clusters, self._static_clusters], previous.get(config.CLUSTER_TYPE)
            ),
            config.LISTENER_TYPE: listeners,
            config.ROUTE_TYPE: self._routes,
            VIRTUAL_HOST_TYPE: self._merged(
                VIRTUAL_HOST_TYPE,
                [*[(p.hosts_version, p.hosts) for p in parts], self._placeholder_hosts],
                previous.get(VIRTUAL_HOST_TYPE),
            ),
        }
        self._views[namespace] = (key, view)
        return view

    def _listener_key(self, namespace: str) -> _ListenerKey:
        """(opaque ports, server-first ports, mTLS mode, visible peers) of the namespace's capture
        listeners."""
        opaque = self._opaque_ports.get(namespace) or config.DEFAULT_OPAQUE_PORTS
        server_first = self._server_first.get(namespace) or config.DEFAULT_SERVER_FIRST_PORTS
        mode = self._mtls_modes.get(namespace) or self.mtls
        return opaque, server_first, mode, self._visible_peers(namespace)

    def _capture_listeners(
        self,
        opaque: tuple[int, ...],
        server_first: tuple[int, ...],
        mode: str | None,
        peers: _PeersKey,
        authorization: access.Authorization | None = None,
    ) -> list[dict[str, Any]]:
        static = config.sidecar_resources(
            [], self.ports, bind_host=self.bind_host, opaque_ports=opaque, mtls=mode,
            trust_domain=self.trust_domain, peers=self._peer_sets[peers], server_first_ports=server_first,
        )  # fmt: skip
        if authorization is None:
            return static.listeners
        return [
            access.authorized_listener(listener, authorization)
            if listener["name"] == config.INBOUND_ROUTE_NAME
            else listener
            for listener in static.listeners
        ]

    def _listeners_of(self, namespace: str) -> TypeSnapshot:
        """The capture listeners with the namespace's opaque ports and mTLS mode; namespaces with the
        same share one snapshot."""
        if (
            namespace not in self._opaque_ports
            and namespace not in self._server_first
            and namespace not in self._mtls_modes
            and not self._visible_peers(namespace)
        ):
            return self._default_listeners
        key = self._listener_key(namespace)
        found = self._listeners.get(key)
        if found is None:
            found = self._listeners[key] = self._encode_listeners(self._capture_listeners(*key))
        return found

    def _authorized_listeners(self, namespace: str, authorization: access.Authorization) -> TypeSnapshot:
        """The namespace's listeners with `authorization` in the inbound one; shared by equal policies."""
        key = (*self._listener_key(namespace), authorization)
        found = self._authorized.get(key)
        if found is None:
            found = self._authorized[key] = self._encode_listeners(self._capture_listeners(*key))
        return found

    def _authorized_routes(self, authorization: access.Authorization) -> TypeSnapshot:
        """The route configurations with `authorization` enforced on the inbound one."""
        found = self._authorized.get(authorization)
        if found is None:
            routes = [
                access.authorized_routes(route, authorization)
                if route["name"] == config.INBOUND_ROUTE_NAME
                else route
                for route in self._static_routes
            ]
            found = self._authorized[authorization] = encode(config.ROUTE_TYPE, routes)
        return found

    async def _push_workloads(self, views: Mapping[str, Snapshot]) -> None:
        """Each authorized destination of a connected namespace gets its namespace's view with its own
        inbound listener (TCP rules) and route configurations (HTTP rules); a destination no
        TrafficTarget selects any more falls back to the namespace's view."""
        wanted: dict[str, Snapshot] = {}
        for namespace, view in views.items():
            for authorization in self._access.get(namespace, ()):
                wanted[authorization.key] = {
                    **view,
                    config.LISTENER_TYPE: self._authorized_listeners(namespace, authorization),
                    config.ROUTE_TYPE: self._authorized_routes(authorization),
                }
        for key in set(self._workloads) - set(wanted):
            self.ads.drop_snapshot(key)
        for key, view in wanted.items():
            held = self._workloads.get(key)
            if held is None or any(held.get(t) is not s for t, s in view.items()):
                await self.ads.set_snapshot(key, view)
        self._workloads = wanted
        in_use = {id(view[t]) for view in wanted.values() for t in (config.LISTENER_TYPE, config.ROUTE_TYPE)}
        self._authorized = {k: s for k, s in self._authorized.items() if id(s) in in_use}

    def _merged(
        self, type_url: str, parts: list[tuple[str, Mapping[str, Entry]]], previous: TypeSnapshot | None
    ) -> TypeSnapshot:
        """The parts' entries as one TypeSnapshot; views seeing the same parts share it (and its
        serialised responses), and it is merged only the first time: from the namespace's `previous`
        snapshot, replacing only the parts that changed."""
        key = (type_url, *[version for version, _ in parts])
        found = self._shared.get(key)
        if found is not None:
            return found
        if previous is not None and previous.parts:
            versions = {version for version, _ in parts}
            entries = dict(previous.entries)
            for version, part in previous.parts:
                if version not in versions:
                    for name in part:
                        del entries[name]
            kept = {version for version, _ in previous.parts}
            added = [part for version, part in parts if version not in kept]
        else:
            entries, added = {}, [part for _, part in parts]
        for part in added:
            entries.update(part)
        # Parts only speed up merges and differences while no name is in two of them.
        disjoint = len(entries) == sum(len(part) for _, part in parts)
        found = TypeSnapshot(digest(["\n".join(key).encode()]), entries, tuple(parts) if disjoint else ())
        self._shared[key] = found
        return found

    async def push(self) -> str:
        """Send every connected namespace its view (unchanged types are not resent); returns `version`."""
        async with self._push_lock:
            wanted = self.ads.namespaces()
            for namespace in set(self._views) - wanted:
                self.ads.drop_snapshot(namespace)
                del self._views[namespace]
            previous = {namespace: view for namespace, (_, view) in self._views.items()}
            views = {namespace: self._view(namespace) for namespace in sorted(wanted)}
            in_use = {s.version for view in views.values() for s in view.values()}
            self._shared = {k: s for k, s in self._shared.items() if s.version in in_use}
            self._listeners = {k: s for k, s in self._listeners.items() if s.version in in_use}
            seen = {self._visible_peers(namespace) for namespace in views}
            seen |= {key[3] for key in self._listeners}
            self._peer_sets = {k: s for k, s in self._peer_sets.items() if k in seen}
            self._peer_clusters = {k: s for k, s in self._peer_clusters.items() if k in seen}
            wanted_clusters = {name for _, entries in self._peer_clusters.values() for name in entries}
            self._parsed = {name: e for name, e in self._parsed.items() if name in wanted_clusters}
            for namespace, view in views.items():
                if previous.get(namespace) is not view:
                    await self.ads.set_snapshot(namespace, view)
            await self._push_workloads(views)
            self.refused = [r for t in self._translations.values() for r in t.refused] + self._host_conflicts
            return self.version

    def _view_requested(self, namespace: str) -> None:
        """A sidecar of a namespace without a view connected: build its view now."""
        if self._holding:
            return  # the first push after the first update includes it
        task = asyncio.get_running_loop().create_task(self.push())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync(self, objects: Iterable[Object]) -> str:
        """Translate every namespace of `objects` (forgetting the others) and push."""
        by_namespace: dict[str, list[Object]] = {namespace: [] for namespace in self._translations}
        for obj in objects:
            by_namespace.setdefault(_namespace_of(obj), []).append(obj)
        self.update(by_namespace)
        return await self.push()
