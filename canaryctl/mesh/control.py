"""The mesh control plane's sync step: watched Kubernetes objects → one xDS view per namespace.

Whoever watches the cluster calls `update` with the objects of the namespaces that changed and then
`push`. Namespaces translate independently (a TrafficSplit only names objects in its own namespace),
so a change re-translates one namespace, not the mesh. An object that cannot be translated or
conflicts with an older one is refused alone (`refused`) and everything else keeps being routed.

A view is what the sidecars of one namespace get: the routes of their own namespace (short names
included) and the routes other namespaces export to them (qualified names only). Views are built
for namespaces with a connected sidecar, from per-route protobuf bytes encoded once per change: a
route configuration is the concatenation of its virtual hosts' encodings (protobuf merges repeated
fields on concatenation), so building a view of a thousand services copies bytes instead of
converting JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, json_format

from canaryctl.mesh import config
from canaryctl.mesh.ads import AdsServer, Snapshot, TypeSnapshot, digest, encode_resources
from canaryctl.mesh.translate import ALL_NAMESPACES, MeshRoute, Refusal, Translation, translate_namespace

Object = Mapping[str, Any]


@dataclass(frozen=True)
class _EncodedRoute:
    route: MeshRoute
    local_host: bytes
    """The virtual host as its own namespace sees it (short names too), as a RouteConfiguration field."""
    remote_host: bytes
    clusters: tuple[tuple[str, any_pb2.Any], ...]


def _virtual_host_bytes(spec: config.RouteSpec) -> bytes:
    route_config = config.build_route_config(config.OUTBOUND_ROUTE_NAME, [spec])
    del route_config["name"], route_config["@type"]
    try:
        parsed: route_pb2.RouteConfiguration = json_format.ParseDict(
            route_config, route_pb2.RouteConfiguration(), ignore_unknown_fields=False
        )
    except json_format.ParseError as error:
        raise ValueError(f"service {spec.service!r}: {error}") from error
    return bytes(parsed.SerializeToString())


def _encode(route: MeshRoute) -> _EncodedRoute:
    clusters = []
    for cluster in config.build_clusters([route.spec]):
        try:
            clusters.append((str(cluster["name"]), json_format.ParseDict(cluster, any_pb2.Any())))
        except json_format.ParseError as error:
            raise ValueError(f"cluster {cluster['name']!r}: {error}") from error
    return _EncodedRoute(
        route,
        _virtual_host_bytes(route.spec_for(route.namespace)),
        _virtual_host_bytes(route.spec),
        tuple(clusters),
    )


def _route_key(route: MeshRoute) -> str:
    return json.dumps(
        [route.namespace, sorted(route.export_to), route.short_hosts, route.spec.model_dump(mode="json")],
        sort_keys=True,
    )


def _versions(view: Snapshot) -> dict[str, str]:
    return {type_url: snapshot.version for type_url, snapshot in view.items()}


def _namespace_of(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


class MeshControlPlane:
    def __init__(
        self,
        ads: AdsServer,
        ports: config.SidecarPorts | None = None,
        bind_host: str = "0.0.0.0",
        default_export_to: frozenset[str] = frozenset({ALL_NAMESPACES}),
    ) -> None:
        self.ads = ads
        self.ports = ports or config.SidecarPorts()
        self.bind_host = bind_host
        self.default_export_to = default_export_to
        self.refused: list[Refusal] = []
        """Objects left out at the last push, and why."""
        self.version = ""
        """Digest of everything routed and refused; changes whenever the mesh's config does."""
        self._translations: dict[str, Translation] = {}
        self._encoded: dict[str, dict[str, _EncodedRoute]] = {}
        self._host_conflicts: list[Refusal] = []
        self._excluded: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[str]] = set()
        static = encode_resources(config.sidecar_resources([], self.ports, bind_host=bind_host))
        self._static_clusters = static[config.CLUSTER_TYPE].resources
        self._listeners = static[config.LISTENER_TYPE]
        routes = dict(static[config.ROUTE_TYPE].resources)
        self._other_routes = [
            (n, r) for n, r in static[config.ROUTE_TYPE].resources if n != config.OUTBOUND_ROUTE_NAME
        ]
        outbound = route_pb2.RouteConfiguration()
        routes[config.OUTBOUND_ROUTE_NAME].Unpack(outbound)
        self._route_name = route_pb2.RouteConfiguration(name=outbound.name).SerializeToString()
        self._passthrough = route_pb2.RouteConfiguration(
            virtual_hosts=outbound.virtual_hosts
        ).SerializeToString()
        self._views: dict[str, Snapshot] = {}
        self._shared: dict[str, TypeSnapshot] = {}
        self._push_lock = asyncio.Lock()
        ads.on_new_view = self._view_requested

    # -- translation ---------------------------------------------------------------------------------

    def update(self, namespaces: Mapping[str, Iterable[Object]]) -> None:
        """Translate these namespaces' objects anew (an empty list forgets the namespace)."""
        for namespace, objects in namespaces.items():
            items = list(objects)
            if not items:
                self._translations.pop(namespace, None)
                self._encoded.pop(namespace, None)
                continue
            translation = translate_namespace(items, self.default_export_to)
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
        self._check_hosts()

    def _check_hosts(self) -> None:
        """A qualified name or ClusterIP claimed twice (only possible with hand-made ClusterIPs) keeps its
        first claimer, by namespace and service, and refuses the other: Envoy would refuse the whole
        route configuration."""
        claimed: dict[str, str] = {}
        self._host_conflicts = []
        self._excluded = set()
        for namespace in sorted(self._translations):
            for route in sorted(self._translations[namespace].routes, key=lambda r: r.spec.service):
                service = route.spec.service
                clash = next((h for h in route.spec.hosts if claimed.get(h, service) != service), None)
                if clash is None:
                    claimed.update(dict.fromkeys(route.spec.hosts, service))
                    continue
                self._excluded.add((namespace, service))
                message = f"host {clash!r} is already routed to {claimed[clash]}"
                self._host_conflicts.append(Refusal(route.split, message))
        parts = []
        for namespace in sorted(self._translations):
            translation = self._translations[namespace]
            parts += [key.encode() for key in sorted(self._encoded[namespace])]
            parts += [f"{r.ref}: {r.message}".encode() for r in translation.refused]
        self.version = digest(parts)

    # -- views ---------------------------------------------------------------------------------------

    def _view(self, namespace: str) -> Snapshot:
        hosts = [self._route_name]
        clusters: dict[str, any_pb2.Any] = {}
        for owner in sorted(self._encoded):
            for encoded in self._encoded[owner].values():
                route = encoded.route
                if not route.visible_to(namespace) or (owner, route.spec.service) in self._excluded:
                    continue
                hosts.append(encoded.local_host if owner == namespace else encoded.remote_host)
                for name, cluster in encoded.clusters:
                    clusters.setdefault(name, cluster)
        hosts.append(self._passthrough)
        route_config = any_pb2.Any(type_url=config.ROUTE_TYPE, value=b"".join(hosts))
        all_clusters = [*sorted(clusters.items()), *self._static_clusters]
        return {
            config.CLUSTER_TYPE: self._shared_snapshot(all_clusters),
            config.LISTENER_TYPE: self._listeners,
            config.ROUTE_TYPE: self._shared_snapshot(
                [(config.OUTBOUND_ROUTE_NAME, route_config), *self._other_routes]
            ),
        }

    def _shared_snapshot(self, resources: list[tuple[str, any_pb2.Any]]) -> TypeSnapshot:
        """Views with equal content share one TypeSnapshot, and so its serialised response."""
        version = digest([part for name, r in resources for part in (name.encode(), r.value)])
        if version not in self._shared:
            self._shared[version] = TypeSnapshot(version, resources)
        return self._shared[version]

    async def push(self) -> str:
        """Send every connected namespace its view (unchanged types are not resent); returns `version`."""
        async with self._push_lock:
            wanted = self.ads.namespaces()
            views = {namespace: self._view(namespace) for namespace in wanted}
            previous = self._views
            for namespace in set(previous) - wanted:
                self.ads.drop_snapshot(namespace)
            in_use = {s.version for view in views.values() for s in view.values()}
            self._shared = {v: s for v, s in self._shared.items() if v in in_use}
            self._views = views
            for namespace, view in views.items():
                if _versions(previous.get(namespace, {})) != _versions(view):
                    await self.ads.set_snapshot(namespace, view)
            self.refused = [r for t in self._translations.values() for r in t.refused] + self._host_conflicts
            return self.version

    def _view_requested(self, namespace: str) -> None:
        """A sidecar of a namespace without a view connected: build the views now."""
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
