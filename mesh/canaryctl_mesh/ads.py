"""Incremental (delta) gRPC ADS server for sidecars, one view per namespace.

Why delta: over state-of-the-world xDS every change resends all of a type's resources to every
sidecar, so one weight change in a mesh of 1,000 routed services moves the whole route table
(~230 KB) to each of thousands of sidecars. Over delta ADS a sidecar receives only what changed. The
control plane hands each routed service to Envoy as its own virtual host through VHDS (the outbound
route configuration names it with ``vhds``, and Envoy asks for the hosts on this same stream), so a
weight change is one virtual host of a few hundred bytes per sidecar.

Per stream and type the server remembers what the sidecar holds: the snapshot it last ACKed, shared
by the streams of one view, so thousands of sidecars cost references, not copies. A push sends the
difference (changed resources, names of removed ones); the difference between two versions is
serialised once and shared by every stream making the same move, each stream only appending its
nonce. Resource versions are content hashes: a sidecar reconnecting after a control-plane restart
reports what it holds (``initial_resource_versions``) and receives only what changed since.

Ordering: clusters, then listeners, then route configurations, then virtual hosts, each after the
previous was ACKed; clusters the sidecar's routes may still name are removed only after the new
routes were ACKed (make before break: no request meets a route to a cluster Envoy no longer has).
One response per stream is in flight at a time: until its ACK (or NACK) arrives the server cannot
know what the sidecar holds, so a newer snapshot waits for it and the push then starts over from
there (a sidecar that never answers holds up only its own stream). A NACK is recorded and never
changes what the node is considered to hold; new streams of a node that rejected a version get the
last version it accepted.

Which snapshot a stream gets: with an `Authenticator`, the one of the workload (namespace and
ServiceAccount, where it has one: `canaryctl_mesh.access`) or else of the namespace its credentials
prove (`canaryctl_mesh.identity`), never what the node id claims; a node id naming another
namespace (or, for a pod-bound token, another pod) is refused, and each identity (one pod, with
pod-bound tokens) may hold at most `max_streams_per_identity` streams.
Without one (loopback tests, the local runtime) the node id's snapshot, else the snapshot of the
namespace after its last dot (``pod.namespace``), else ``"*"``.

SDS secrets (the sidecar's SPIFFE certificate and the mesh trust, `config.WORKLOAD_SECRET` and
`config.TRUST_SECRET`) are not part of any view: `secrets` hands each authenticated stream those of
its own identity, so no sidecar can ever be sent another identity's key, and a stream without a
proven identity gets none. `secrets_changed` pushes a renewed certificate to the streams of that
identity; Envoy uses it for new connections and keeps the open ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers types for Any parsing)
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stats.v3 import stats_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from canaryctl_mesh import config
from canaryctl_mesh.identity import Authenticator, Identity, ReviewUnavailable, Unauthenticated, workload_key
from canaryctl_mesh.telemetry import XdsCounters

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = "DeltaAggregatedResources"
ANY_NODE = "*"
VIRTUAL_HOST_TYPE = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
TYPE_ORDER = (config.SECRET_TYPE, *config.TYPE_ORDER, VIRTUAL_HOST_TYPE)
"""Push order: a route must never name a cluster the sidecar does not have yet; a renewed certificate
goes out before anything else waiting."""
WILDCARD = "*"
MAX_ERROR_MESSAGE = 1024
"""Characters of a NACK's error kept and logged (a sidecar's message may be megabytes)."""
DEPARTED_RETENTION = 600.0
"""Seconds a node's status outlives its last stream (a restarting Envoy comes back within them)."""
MAX_CACHED_MOVES = 256
"""Serialised differences kept (most are a few hundred bytes; a first full send can be ~250 KB)."""
WRITE_GRACE = 5.0
"""Seconds an ending stream waits for a response write in progress (a sidecar that reads nothing)."""
SERVED_TYPES = frozenset(TYPE_ORDER)
"""Type URLs a stream may subscribe to; a request for any other ends the stream."""
MAX_SUBSCRIBED_NAMES = 1024
"""Resource names one stream may subscribe to per type. A sidecar names what its view can hold: Envoy,
as meshd configures it, names its route configurations, its two secrets and one name for all virtual
hosts (a handful); an Envoy naming each virtual host of a view one by one stays within this bound for a
view of 1,000 routed services. More ends the stream, so no sidecar grows meshd's memory without bound."""
MAX_RESOURCE_NAME = 512
"""Characters of one subscribed name (virtual host names are ``outbound/`` and a DNS name of at most 253)."""
MAX_CACHED_RESTRICTIONS = 64
"""Name sets whose restriction a shared snapshot keeps (sidecars of one view subscribe to the same few)."""

SERVER_OPTIONS = (("grpc.http2.bdp_probe", 0),)
"""No bandwidth-delay probing: gRPC answers received data with PINGs to size its receive window, and a
control plane receives only small requests and ACKs, so at 2,000 sidecars the pings and their answers
cost about a quarter of the CPU of a push on each side."""

Entry = tuple[str, any_pb2.Any | None]
"""(resource version, resource); None only for versions a reconnecting sidecar reported."""


def digest(parts: Iterable[bytes]) -> str:
    """A short content hash: the version of a resource or of a type snapshot."""
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(len(part).to_bytes(8, "little"))
        hashed.update(part)
    return hashed.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class TypeSnapshot:
    """One type's resources at one version, by name. `version` changes whenever any entry does."""

    version: str
    entries: Mapping[str, Entry]
    parts: tuple[tuple[str, Mapping[str, Entry]], ...] = ()
    """Disjoint parts `entries` was merged from, with their versions: a difference between two
    snapshots with parts looks only at the parts that are not in both (one service's change in a
    view of thousands costs that service's part, not the view)."""
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False)
    """The response sending every entry and the restrictions to name sets, made on first use."""

    @classmethod
    def of(cls, resources: Iterable[tuple[str, any_pb2.Any]]) -> TypeSnapshot:
        entries = {name: (digest([resource.value]), resource) for name, resource in resources}
        return cls(digest(f"{n}={v}".encode() for n, (v, _) in sorted(entries.items())), entries)

    def restricted(self, names: frozenset[str], namespaces: bool = False) -> TypeSnapshot:
        """Only the entries named (what a sidecar subscribed to by name holds); with `namespaces`, a
        name also stands for every ``<name>/...`` (how newer Envoys subscribe to a route
        configuration's virtual hosts)."""
        found: TypeSnapshot | None = self._derived.get((names, namespaces))
        if found is None:
            entries = {
                name: entry
                for name, entry in sorted(self.entries.items())
                if name in names or (namespaces and name.rpartition("/")[0] in names)
            }
            found = TypeSnapshot(digest([self.version.encode(), *(n.encode() for n in entries)]), entries)
            if len(self._derived) < MAX_CACHED_RESTRICTIONS:  # a stream changing its names keeps none
                self._derived[(names, namespaces)] = found
        return found

    def full(self, type_url: str) -> bytes:
        """The response sending every entry (the first push to each new stream of this version)."""
        body: bytes | None = self._derived.get(type_url)
        if body is None:
            body = self._derived[type_url] = _response(type_url, self, self.entries.items(), [])
        return body


Snapshot = dict[str, TypeSnapshot]
"""One view's resources by type URL."""


def encode(type_url: str, resources: list[dict[str, Any]]) -> TypeSnapshot:
    """Parse up front so a malformed snapshot is refused before any Envoy sees it."""
    encoded = []
    for resource in resources:
        if resource.get("@type") != type_url:
            raise ValueError(f"resource {resource.get('name')!r} is not a {type_url}")
        try:
            encoded.append((str(resource["name"]), json_format.ParseDict(resource, any_pb2.Any())))
        except (json_format.ParseError, KeyError) as error:
            raise ValueError(f"invalid {type_url} {resource.get('name')!r}: {error}") from error
    return TypeSnapshot.of(encoded)


def encode_resources(resources: config.Resources) -> Snapshot:
    return {type_url: encode(type_url, items) for type_url, items in resources.by_type().items()}


def _reported(versions: Mapping[str, str]) -> TypeSnapshot:
    """What a reconnecting sidecar says it holds: versions without resources."""
    entries: dict[str, Entry] = {name: (version, None) for name, version in versions.items()}
    return TypeSnapshot(digest(f"{n}={v}".encode() for n, v in sorted(versions.items())), entries)


def _difference(type_url: str, held: TypeSnapshot | None, target: TypeSnapshot) -> bytes | None:
    """The response taking a sidecar from `held` to `target` (without nonce), None if there is nothing."""
    if held is None:
        return target.full(type_url) if target.entries else None
    new, old = target.entries, held.entries
    if held.parts and target.parts:
        kept = {version for version, _ in held.parts} & {version for version, _ in target.parts}
        candidates: set[str] = set()
        for version, part in (*held.parts, *target.parts):
            if version not in kept:
                candidates.update(part)
        names: Iterable[str] = candidates
        removed = sorted(name for name in candidates if name not in new)
    else:
        names = new
        removed = sorted(old.keys() - new.keys())
    changed = sorted(
        (name, entry)
        for name in names
        if (entry := new.get(name)) is not None
        and ((had := old.get(name)) is None or (had is not entry and had[0] != entry[0]))
    )
    if not changed and not removed:
        return None
    return _response(type_url, target, changed, removed)


def _response(
    type_url: str, target: TypeSnapshot, changed: Iterable[tuple[str, Entry]], removed: list[str]
) -> bytes:
    resources = [
        discovery_pb2.Resource(name=name, version=version, resource=resource)
        for name, (version, resource) in changed
    ]
    response = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=target.version,
        type_url=type_url,
        resources=resources,
        removed_resources=removed,
    )
    return bytes(response.SerializeToString())


@dataclass
class NodeStatus:
    """What one node acknowledged (and when), and what it rejected (with the error) since."""

    acked: dict[str, str] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)
    """time.monotonic() of the ACK, by type."""
    error: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    last_good: dict[str, TypeSnapshot] = field(default_factory=dict, repr=False)
    """What it last ACKed, by type: what its new streams get of a type it rejected."""


def key_namespace(key: str) -> str:
    """The namespace of a namespace's or a workload's snapshot key (``<namespace>/<service account>``)."""
    return key.partition("/")[0]


def node_namespace(node_id: str) -> str:
    """Sidecars are named ``<pod>.<namespace>``; pod names may hold dots, namespaces never do."""
    return node_id.rsplit(".", 1)[1] if "." in node_id else ""


def _node_matches(node_id: str, identity: Identity) -> bool:
    if identity.pod:
        return node_id == f"{identity.pod}.{identity.namespace}"
    return node_namespace(node_id) == identity.namespace


@dataclass
class _Sent:
    """A response waiting for its ACK."""

    nonce: str
    holds: TypeSnapshot
    """What the sidecar holds once it ACKs."""
    source: TypeSnapshot
    """The view's snapshot the response brings the sidecar to (or towards, for a bridge)."""
    final: bool
    """False for the first half of a make-before-break cluster change."""
    waiter: asyncio.Future[bool]
    written: float
    """time.monotonic() when it was written."""


@dataclass(eq=False)
class _Subscription:
    """One type on one stream: what the sidecar asked for and what it holds."""

    wildcard: bool
    names: frozenset[str]
    held: TypeSnapshot | None = None
    answered: bool = False
    """A response went out since it subscribed: Envoy's initial fetch waits for one, even an empty one."""
    sent: _Sent | None = None


def _retrieved(write: asyncio.Future[None]) -> None:
    """A failed write ends its stream through the pusher; one no task awaits any more is not an error."""
    if not write.cancelled():
        write.exception()


class StreamRefused(Exception):
    """A request the server will not serve: the stream ends with `code` and the message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        """The ``refused_streams`` counter's label."""


def _checked_names(type_url: str, names: Iterable[str]) -> frozenset[str]:
    """`names` (of one request or one subscription) within the bounds of a served type."""
    if type_url not in SERVED_TYPES:
        raise StreamRefused(
            grpc.StatusCode.INVALID_ARGUMENT, "unknown_type", f"no {type_url[:200]!r} is served"
        )
    found = frozenset(names)
    if len(found) > MAX_SUBSCRIBED_NAMES:
        raise StreamRefused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "subscription_limit",
            f"{len(found)} names of {type_url}; at most {MAX_SUBSCRIBED_NAMES} per stream",
        )
    if any(len(name) > MAX_RESOURCE_NAME for name in found):
        raise StreamRefused(
            grpc.StatusCode.INVALID_ARGUMENT, "subscription_limit", f"a name longer than {MAX_RESOURCE_NAME}"
        )
    return found


@dataclass(eq=False)
class _Stream:
    context: Any
    identity: Identity | None = None
    node_id: str = ""
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    refused: StreamRefused | None = None
    """Why the server ends the stream, once a request went beyond what it serves."""
    writing: asyncio.Future[None] | None = None
    """The last response write."""
    ended: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    @property
    def namespace(self) -> str:
        return self.identity.namespace if self.identity else node_namespace(self.node_id)

    def snapshot_keys(self) -> tuple[str, ...]:
        """Snapshot keys to look up, most specific first; proven identities only get their workload's
        (``<namespace>/<service account>``, set for workloads with their own inbound authorization)
        or their namespace's."""
        if self.identity is not None:
            return (workload_key(self.identity), self.identity.namespace)
        return (self.node_id, self.namespace, ANY_NODE)


class AdsServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        credentials: grpc.ServerCredentials | None = None,
        authenticator: Authenticator | None = None,
        max_streams_per_identity: int = 0,
    ) -> None:
        """`credentials` serve TLS; `max_streams_per_identity` 0 means no limit."""
        self.host = host
        self.port = port
        self.credentials = credentials
        self.authenticator = authenticator
        self.max_streams_per_identity = max_streams_per_identity
        self.on_new_view: Callable[[str], None] | None = None
        """Called with a namespace whose sidecar connected while no snapshot serves it."""
        self.secrets: Callable[[Identity], Awaitable[TypeSnapshot]] | None = None
        """The SDS secrets of a proven identity; None serves no secrets."""
        self._server: grpc.aio.Server | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._moves: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()
        self._bridges: OrderedDict[tuple[str, str], TypeSnapshot | None] = OrderedDict()
        self._streams: set[_Stream] = set()
        self._by_node: dict[str, set[_Stream]] = {}
        self._by_namespace: dict[str, set[_Stream]] = {}
        self._per_identity: Counter[Identity] = Counter()
        self._status: dict[str, NodeStatus] = {}
        self._departed: OrderedDict[str, float] = OrderedDict()
        self._nonce = itertools.count(1)
        self._changed = asyncio.Event()
        self.counters = XdsCounters()
        """Pushes, ACKs, NACKs and refused streams, for meshd's /metrics."""

    async def start(self) -> int:
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream_handler,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=None,  # responses are pre-serialised bytes
        )
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(ADS_SERVICE, {ADS_METHOD: handler})]
        )
        address = f"{self.host}:{self.port}"
        if self.credentials is not None:
            self.port = self._server.add_secure_port(address, self.credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        await self._server.start()
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        for stream in list(self._streams):
            stream.end()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> AdsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- public API -----------------------------------------------------------------------------------

    async def set_snapshot(self, key: str, resources: config.Resources | Snapshot) -> str:
        """Make `resources` the desired state of `key`: a namespace's view, a node id or "*" (every
        node without one of its own); returns its version.

        Raises ValueError for resources that do not parse, leaving the previous snapshot in place.
        """
        snapshot = resources if isinstance(resources, dict) else encode_resources(resources)
        self._snapshots[key] = snapshot
        candidates = self._streams if key == ANY_NODE else self._by_node.get(key, set())
        for stream in candidates | self._by_namespace.get(key_namespace(key), set()):
            if self._snapshot_key(stream) == key:
                stream.wake.set()
        return self.snapshot_version(key)

    def drop_snapshot(self, key: str) -> None:
        """Forget `key`; streams that used it move to their next key (a workload's to its namespace's)."""
        if self._snapshots.pop(key, None) is not None:
            for stream in self._by_namespace.get(key_namespace(key), set()):
                stream.wake.set()

    def identities(self) -> set[Identity]:
        """Proven identities with a connected stream."""
        return set(self._per_identity)

    def secrets_changed(self, identity: Identity) -> None:
        """`secrets` has something new for `identity`: push it to its streams."""
        for stream in self._streams:
            if stream.identity == identity:
                stream.wake.set()

    def snapshot_version(self, key: str) -> str:
        snapshot = self._snapshots.get(key, {})
        return "-".join(snapshot[t].version for t in TYPE_ORDER if t in snapshot)

    def nodes(self) -> set[str]:
        """Node ids with a connected stream."""
        return set(self._by_node)

    def namespaces(self) -> set[str]:
        """Namespaces with a connected sidecar."""
        return {namespace for namespace, streams in self._by_namespace.items() if streams}

    def stream_counts(self) -> dict[str, tuple[int, int, int]]:
        """(streams, sidecars, sidecars whose Envoy rejected their current config) by namespace, of
        the connected sidecars."""
        counts = {}
        for namespace, streams in self._by_namespace.items():
            nodes = {stream.node_id for stream in streams}
            rejecting = sum(1 for node in nodes if (status := self._status.get(node)) and status.rejected)
            counts[namespace] = (len(streams), len(nodes), rejecting)
        return counts

    def status(self, node_id: str) -> NodeStatus:
        found = self._status.get(node_id)
        if found is None:
            found = self._status[node_id] = NodeStatus()
        return found

    async def wait_acked(self, node_id: str, timeout: float = 10.0) -> NodeStatus:
        """Wait until `node_id` acknowledged its current snapshot; raises RuntimeError on a NACK."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(node_id)
            snapshot = self._node_snapshot(node_id)
            if any(status.rejected.get(t) == s.version for t, s in snapshot.items()):
                raise RuntimeError(f"node {node_id} rejected the snapshot: {status.error}")
            if snapshot and all(status.acked.get(t) == s.version for t, s in snapshot.items() if s.entries):
                return status
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        raise TimeoutError(f"node {node_id} did not acknowledge within {timeout}s")

    # -- what to send -----------------------------------------------------------------------------------

    def _snapshot_key(self, stream: _Stream) -> str | None:
        for key in stream.snapshot_keys():
            if key in self._snapshots:
                return key
        return None

    def _node_snapshot(self, node_id: str) -> Snapshot:
        streams = self._by_node.get(node_id)
        if streams:
            key = self._snapshot_key(next(iter(streams)))
        else:
            key = next(
                (k for k in (node_id, node_namespace(node_id), ANY_NODE) if k in self._snapshots), None
            )
        return self._snapshots.get(key, {}) if key is not None else {}

    def _move(self, type_url: str, held: TypeSnapshot | None, target: TypeSnapshot) -> bytes | None:
        """The serialised difference, shared by every stream making the same move (never cached for
        secrets: each identity's are its own, and keys are kept nowhere they are not needed)."""
        if held is None or type_url == config.SECRET_TYPE:
            return _difference(type_url, held, target)
        key = (type_url, held.version, target.version)
        if key in self._moves:
            self._moves.move_to_end(key)
            return self._moves[key]
        body = self._moves[key] = _difference(type_url, held, target)
        while len(self._moves) > MAX_CACHED_MOVES:
            self._moves.popitem(last=False)
        return body

    def _bridge(self, held: TypeSnapshot | None, target: TypeSnapshot) -> TypeSnapshot | None:
        """The target clusters plus the held ones it drops, or None if it drops none."""
        if held is None:
            return None
        key = (held.version, target.version)
        if key not in self._bridges:
            dropped = {n: e for n, e in held.entries.items() if n not in target.entries}
            self._bridges[key] = (
                TypeSnapshot(f"{target.version}+{held.version}", {**target.entries, **dropped})
                if dropped
                else None
            )
            while len(self._bridges) > MAX_CACHED_MOVES:
                self._bridges.popitem(last=False)
        return self._bridges[key]

    # -- pushing ------------------------------------------------------------------------------------------

    async def _pusher(self, stream: _Stream) -> None:
        """Bring the stream to its snapshot whenever it is woken: types in order, each after an ACK."""
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            await self._push(stream)

    async def _push(self, stream: _Stream) -> None:
        key = self._snapshot_key(stream)
        snapshot = self._snapshots[key] if key is not None else {}
        status = self.status(stream.node_id)
        final_clusters: tuple[_Subscription, TypeSnapshot, TypeSnapshot] | None = None
        for type_url in TYPE_ORDER:
            subscription = stream.subscriptions.get(type_url)
            source = (
                await self._secrets_of(stream) if type_url == config.SECRET_TYPE else snapshot.get(type_url)
            )
            if subscription is None or source is None:
                continue
            if status.rejected and status.rejected.get(type_url) == source.version:
                last_good = status.last_good.get(type_url)
                if last_good is None:
                    continue
                source = last_good
            target = (
                source
                if subscription.wildcard
                else source.restricted(subscription.names, type_url == VIRTUAL_HOST_TYPE)
            )
            if subscription.held is target:
                continue
            final = True
            if type_url == config.CLUSTER_TYPE:
                bridge = self._bridge(subscription.held, target)
                if bridge is not None:
                    final_clusters, target, final = (subscription, target, source), bridge, False
            if not await self._deliver(stream, type_url, subscription, target, source, final):
                return
            if stream.wake.is_set():
                return  # a newer snapshot: start over from what the sidecar now holds
        if final_clusters is not None:
            subscription, target, source = final_clusters
            await self._deliver(stream, config.CLUSTER_TYPE, subscription, target, source, True)

    async def _secrets_of(self, stream: _Stream) -> TypeSnapshot | None:
        if self.secrets is None or stream.identity is None:
            return None
        return await self.secrets(stream.identity)

    async def _deliver(
        self,
        stream: _Stream,
        type_url: str,
        subscription: _Subscription,
        target: TypeSnapshot,
        source: TypeSnapshot,
        final: bool,
    ) -> bool:
        """Send the difference and wait for the ACK; False on a NACK."""
        held = subscription.held
        body = self._move(type_url, held, target)
        if body is None and (held is not None or subscription.answered):
            # Nothing the sidecar lacks (it reported exactly these versions when it reconnected).
            self._acknowledged(stream, type_url, target, source, final)
            return True
        if body is None:
            body = _response(type_url, target, [], [])  # Envoy's initial fetch waits for an answer
        nonce = str(next(self._nonce))
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        subscription.sent = _Sent(nonce, target, source, final, waiter, time.monotonic())
        # Protobuf concatenation merges messages: the shared body plus this stream's nonce.
        tail = discovery_pb2.DeltaDiscoveryResponse(nonce=nonce).SerializeToString()
        # Shielded: cancelling a write gRPC has started leaves its operation pending, and the call's
        # status could then not be sent; the handler waits for it instead (`_Stream.writing`).
        stream.writing = asyncio.ensure_future(stream.context.write(body + tail))
        stream.writing.add_done_callback(_retrieved)
        await asyncio.shield(stream.writing)
        self.counters.responses[type_url] += 1
        subscription.answered = True
        return await waiter

    def _acknowledged(
        self, stream: _Stream, type_url: str, holds: TypeSnapshot, source: TypeSnapshot, final: bool
    ) -> None:
        stream.subscriptions[type_url].held = holds
        if not final:
            return
        status = self.status(stream.node_id)
        if status.acked.get(type_url) != source.version:
            status.acked[type_url] = source.version
            status.acked_at[type_url] = time.monotonic()
        status.rejected.pop(type_url, None)
        if not status.rejected:
            status.error = None
        status.last_good[type_url] = source
        self._changed.set()

    # -- requests -----------------------------------------------------------------------------------------

    def _on_request(self, stream: _Stream, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        subscription = stream.subscriptions.get(type_url)
        if subscription is None:
            self._subscribe(stream, request)
            return
        sent = subscription.sent
        if request.response_nonce and sent is not None and request.response_nonce == sent.nonce:
            subscription.sent = None
            self.counters.answered(type_url, time.monotonic() - sent.written)
            if request.HasField("error_detail"):
                self.counters.nacks[type_url, stream.namespace] += 1
                status = self.status(stream.node_id)
                status.error = request.error_detail.message[:MAX_ERROR_MESSAGE]
                status.rejected[type_url] = sent.source.version
                self._changed.set()
                log.warning("node %s rejected %s %s: %s", stream.node_id, type_url, sent.source.version,
                            status.error)  # fmt: skip
            else:
                self.counters.acks[type_url] += 1
                self._acknowledged(stream, type_url, sent.holds, sent.source, sent.final)
            if not sent.waiter.done():
                sent.waiter.set_result(not request.HasField("error_detail"))
        if request.resource_names_subscribe or request.resource_names_unsubscribe:
            added = _checked_names(type_url, request.resource_names_subscribe)
            dropped = set(request.resource_names_unsubscribe)
            subscription.wildcard = (subscription.wildcard or WILDCARD in added) and WILDCARD not in dropped
            subscription.names = _checked_names(type_url, (subscription.names | added) - dropped - {WILDCARD})
            if subscription.held is not None and not subscription.wildcard:
                # Envoy forgets what it unsubscribed from.
                subscription.held = subscription.held.restricted(
                    subscription.names, type_url == VIRTUAL_HOST_TYPE
                )
            if added:
                stream.wake.set()

    def _subscribe(self, stream: _Stream, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """The first request for a type: no names (or "*") is a wildcard subscription."""
        names = _checked_names(request.type_url, request.resource_names_subscribe)
        subscription = _Subscription(not names or WILDCARD in names, names - {WILDCARD})
        if request.initial_resource_versions:
            _checked_names(request.type_url, request.initial_resource_versions)
            subscription.held = _reported(request.initial_resource_versions)
        stream.subscriptions[request.type_url] = subscription
        stream.wake.set()

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        """The stream's proven identity (None without an authenticator), or abort the call."""
        if self.authenticator is None:
            return None
        try:
            identity = await self.authenticator.authenticate(dict(context.invocation_metadata() or ()))
        except Unauthenticated as refused:
            self.counters.refused_streams["unauthenticated"] += 1
            log.info("xDS stream from %s refused: %s", context.peer(), refused)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(refused))
        except ReviewUnavailable as failed:
            # Retryable (Envoy reconnects with backoff); why stays in the log: the caller is unproven.
            self.counters.refused_streams["review_unavailable"] += 1
            log.warning("xDS stream from %s refused, its token cannot be checked: %s", context.peer(), failed)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the token cannot be checked now; retry")
        limit = self.max_streams_per_identity
        if limit and self._per_identity[identity] >= limit:
            self.counters.refused_streams["stream_limit"] += 1
            log.warning(
                "xDS stream from %s refused: %s already has %d streams", context.peer(), identity, limit
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{identity} already holds {limit} xDS streams"
            )
        return identity

    async def _stream_handler(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> None:
        identity = await self._admit(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        stream = _Stream(context, identity=identity, node_id=first.node.id)
        if identity is not None and not _node_matches(stream.node_id, identity):
            pod = identity.pod or "<pod>"
            self.counters.refused_streams["permission_denied"] += 1
            log.info(
                "xDS stream from %s refused: node id %r for %s", context.peer(), stream.node_id, identity
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node id {stream.node_id!r} is not {pod}.{identity.namespace}: the token is for {identity}",
            )
        try:
            self._on_request(stream, first)
        except StreamRefused as refused:
            self._refuse(stream, refused)
            return
        self._register(stream)
        if self._snapshot_key(stream) is None and self.on_new_view is not None:
            self.on_new_view(stream.namespace)
        reader = asyncio.create_task(self._read(stream, requests))
        pusher = asyncio.create_task(self._pusher(stream))
        for task in (reader, pusher):
            task.add_done_callback(lambda _: stream.end())
        try:
            # Until the sidecar goes away, a write to it fails, or the server stops: the call then ends
            # normally instead of being cancelled under gRPC.
            await stream.ended
        finally:
            self._unregister(stream)
            for task in (reader, pusher):
                task.cancel()
            for outcome in await asyncio.gather(reader, pusher, return_exceptions=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, grpc.aio.AioRpcError):
                    log.warning("xDS stream of %s ended: %r", stream.node_id, outcome)
            for subscription in stream.subscriptions.values():
                if subscription.sent is not None and not subscription.sent.waiter.done():
                    subscription.sent.waiter.cancel()
        if stream.writing is not None:
            await asyncio.wait([stream.writing], timeout=WRITE_GRACE)
        if stream.refused is not None:
            self._refuse(stream, stream.refused)

    async def _read(
        self, stream: _Stream, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]
    ) -> None:
        async for request in requests:
            try:
                self._on_request(stream, request)
            except StreamRefused as refused:
                stream.refused = refused
                return

    def _refuse(self, stream: _Stream, refused: StreamRefused) -> None:
        """The refusal's status for the call, which the handler then ends (not an abort: a response
        still being written when the stream ended would make a second status operation fail)."""
        self.counters.refused_streams[refused.reason] += 1
        log.warning("xDS stream of %s ended: %s", stream.node_id, refused)
        stream.context.set_code(refused.code)
        stream.context.set_details(str(refused))

    def _register(self, stream: _Stream) -> None:
        self._departed.pop(stream.node_id, None)
        while self._departed and next(iter(self._departed.values())) < time.monotonic() - DEPARTED_RETENTION:
            self._status.pop(self._departed.popitem(last=False)[0], None)
        self._streams.add(stream)
        self._by_node.setdefault(stream.node_id, set()).add(stream)
        self._by_namespace.setdefault(stream.namespace, set()).add(stream)
        if stream.identity is not None:
            self._per_identity[stream.identity] += 1

    def _unregister(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        for index, key in ((self._by_node, stream.node_id), (self._by_namespace, stream.namespace)):
            members = index.get(key, set())
            members.discard(stream)
            if not members:
                index.pop(key, None)
        if stream.node_id not in self._by_node:
            self._departed[stream.node_id] = time.monotonic()
        if stream.identity is not None:
            self._per_identity[stream.identity] -= 1
            if self._per_identity[stream.identity] <= 0:
                del self._per_identity[stream.identity]
