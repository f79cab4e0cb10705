"""State-of-the-world gRPC ADS server for sidecars, one view per namespace.

Per stream it tracks version, nonce and subscribed names per type; a push sends clusters, waits for
their ACK, then listeners, then routes (a route to an unknown cluster 503s). A NACK is recorded and
never overwrites the last version the node acknowledged: new streams from that node get the last
good resources of a rejected type, and Envoy itself keeps serving them.

Which snapshot a stream gets: with an `Authenticator`, the one of the namespace its credentials
prove (`canaryctl.mesh.identity`), never what the node id claims; a node id naming another
namespace (or, for a pod-bound token, another pod) is refused, and each identity (one pod, with
pod-bound tokens) may hold at most `max_streams_per_identity` streams.
Without one (loopback tests, the local runtime) the node id's snapshot, else the snapshot of the
namespace after its last dot (``pod.namespace``), else ``"*"``.

Responses are serialised once per snapshot and shared by every stream of a view (each stream only
appends its nonce), so a push to thousands of sidecars costs bytes copied, not protobufs built.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers types for Any parsing)
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stats.v3 import stats_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from canaryctl.mesh.config import CLUSTER_TYPE, TYPE_ORDER, Resources
from canaryctl.mesh.identity import Authenticator, Identity, Unauthenticated

log = logging.getLogger(__name__)

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
ANY_NODE = "*"


@dataclass(frozen=True)
class TypeSnapshot:
    """One type's resources at one version, with its DiscoveryResponse bytes cached per name filter."""

    version: str
    resources: list[tuple[str, any_pb2.Any]]
    _bodies: dict[tuple[str, ...], bytes] = field(default_factory=dict, compare=False, repr=False)

    def body(self, type_url: str, names: tuple[str, ...]) -> bytes:
        """The response without its nonce; `names` () means every resource (wildcard)."""
        cached = self._bodies.get(names)
        if cached is None:
            wanted = set(names)
            resources = [r for name, r in self.resources if not wanted or name in wanted]
            response = discovery_pb2.DiscoveryResponse(
                version_info=self.version, type_url=type_url, resources=resources
            )
            cached = self._bodies[names] = response.SerializeToString()
        return cached


Snapshot = dict[str, TypeSnapshot]
"""One view's resources by type URL."""


def digest(parts: list[bytes]) -> str:
    """A short content hash: the version of a type snapshot."""
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(len(part).to_bytes(8, "little"))
        hashed.update(part)
    return hashed.hexdigest()[:16]


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
    return TypeSnapshot(digest([json.dumps(resources, sort_keys=True).encode()]), encoded)


def encode_resources(resources: Resources) -> Snapshot:
    return {type_url: encode(type_url, items) for type_url, items in resources.by_type().items()}


@dataclass
class NodeStatus:
    """What one node acknowledged, and what it rejected (with the error) since its last ACK of that type."""

    acked: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)


def node_namespace(node_id: str) -> str:
    """Sidecars are named ``<pod>.<namespace>``; pod names may hold dots, namespaces never do."""
    return node_id.rsplit(".", 1)[1] if "." in node_id else ""


def _node_matches(node_id: str, identity: Identity) -> bool:
    if identity.pod:
        return node_id == f"{identity.pod}.{identity.namespace}"
    return node_namespace(node_id) == identity.namespace


@dataclass(eq=False)
class _Stream:
    identity: Identity | None = None
    node_id: str = ""
    outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, TypeSnapshot] = field(default_factory=dict)
    nonces: dict[str, str] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    push_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def namespace(self) -> str:
        return self.identity.namespace if self.identity else node_namespace(self.node_id)

    def snapshot_keys(self) -> tuple[str, ...]:
        """Snapshot keys to look up, most specific first; proven identities only get their namespace's."""
        if self.identity is not None:
            return (self.identity.namespace,)
        return (self.node_id, self.namespace, ANY_NODE)


class AdsServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ack_timeout: float = 5.0,
        *,
        credentials: grpc.ServerCredentials | None = None,
        authenticator: Authenticator | None = None,
        max_streams_per_identity: int = 0,
    ) -> None:
        """`credentials` serve TLS; `max_streams_per_identity` 0 means no limit."""
        self.host = host
        self.port = port
        self.ack_timeout = ack_timeout
        self.credentials = credentials
        self.authenticator = authenticator
        self.max_streams_per_identity = max_streams_per_identity
        self.on_new_view: Callable[[str], None] | None = None
        """Called with a namespace whose sidecar connected while no snapshot serves it."""
        self._server: grpc.aio.Server | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._last_good: dict[tuple[str, str], TypeSnapshot] = {}
        self._bridges: dict[tuple[str, str], TypeSnapshot] = {}
        self._streams: set[_Stream] = set()
        self._by_node: dict[str, set[_Stream]] = {}
        self._by_namespace: dict[str, set[_Stream]] = {}
        self._per_identity: Counter[Identity] = Counter()
        self._status: dict[str, NodeStatus] = {}
        self._nonce = itertools.count(1)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream_handler,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=None,  # responses are pre-serialised bytes
        )
        service, method = ADS_METHOD.rsplit("/", 1)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service.lstrip("/"), {method: handler})]
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
            stream.outbox.put_nowait(None)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> AdsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- public API -----------------------------------------------------------------------------------

    async def set_snapshot(self, key: str, resources: Resources | Snapshot) -> str:
        """Make `resources` the desired state of `key`: a namespace's view, a node id or "*" (every
        node without one of its own); returns its version.

        Raises ValueError for resources that do not parse, leaving the previous snapshot in place.
        """
        snapshot = encode_resources(resources) if isinstance(resources, Resources) else resources
        self._snapshots[key] = snapshot
        candidates = self._streams if key == ANY_NODE else self._by_node.get(key, set())
        for stream in list(candidates | self._by_namespace.get(key, set())):
            if self._snapshot_key(stream) == key:
                self._spawn(self._push(stream))
        return self.snapshot_version(key)

    def drop_snapshot(self, key: str) -> None:
        self._snapshots.pop(key, None)

    def snapshot_version(self, key: str) -> str:
        snapshot = self._snapshots.get(key, {})
        return "-".join(snapshot[t].version for t in TYPE_ORDER if t in snapshot)

    def namespaces(self) -> set[str]:
        """Namespaces with a connected sidecar."""
        return {namespace for namespace, streams in self._by_namespace.items() if streams}

    def status(self, node_id: str) -> NodeStatus:
        return self._status.setdefault(node_id, NodeStatus())

    async def wait_acked(self, node_id: str, timeout: float = 10.0) -> NodeStatus:
        """Wait until `node_id` acknowledged its current snapshot; raises RuntimeError on a NACK."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(node_id)
            snapshot = self._node_snapshot(node_id)
            if any(status.rejected.get(t) == s.version for t, s in snapshot.items()):
                raise RuntimeError(f"node {node_id} rejected the snapshot: {status.error}")
            if snapshot and all(status.acked.get(t) == s.version for t, s in snapshot.items() if s.resources):
                return status
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        raise TimeoutError(f"node {node_id} did not acknowledge within {timeout}s")

    # -- the stream -------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _snapshot_key(self, stream: _Stream) -> str | None:
        return next((key for key in stream.snapshot_keys() if key in self._snapshots), None)

    def _node_snapshot(self, node_id: str) -> Snapshot:
        streams = self._by_node.get(node_id)
        if streams:
            key = self._snapshot_key(next(iter(streams)))
        else:
            key = next(
                (k for k in (node_id, node_namespace(node_id), ANY_NODE) if k in self._snapshots), None
            )
        return self._snapshots.get(key, {}) if key is not None else {}

    def _current(self, stream: _Stream, type_url: str) -> TypeSnapshot | None:
        """The snapshot to send, or the node's last good one when the node rejected the current."""
        key = self._snapshot_key(stream)
        current = self._snapshots.get(key, {}).get(type_url) if key is not None else None
        if current and self.status(stream.node_id).rejected.get(type_url) == current.version:
            return self._last_good.get((stream.node_id, type_url))
        return current

    def _send(
        self, stream: _Stream, type_url: str, snapshot: TypeSnapshot | None = None
    ) -> asyncio.Future[bool] | None:
        snapshot = snapshot or self._current(stream, type_url)
        if snapshot is None:
            return None
        nonce = str(next(self._nonce))
        stream.sent[type_url] = snapshot.version
        stream.delivered[type_url] = snapshot
        stream.nonces[type_url] = nonce
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stream.waiters[nonce] = waiter
        # Protobuf concatenation merges messages: the shared body plus this stream's nonce.
        tail = discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString()
        stream.outbox.put_nowait(snapshot.body(type_url, stream.names.get(type_url, ())) + tail)
        return waiter

    async def _push(self, stream: _Stream) -> None:
        """Send changed types in CDS, LDS, RDS order, each after the previous one was ACKed.

        Make before break: clusters the node's current routes may still name stay in the first CDS
        push and are only removed after the new routes were ACKed, so no request meets a route to a
        cluster Envoy no longer has (a 503).
        """
        async with stream.push_lock:
            final_clusters = None
            for type_url in TYPE_ORDER:
                snapshot = self._current(stream, type_url)
                if (
                    type_url not in stream.names
                    or snapshot is None
                    or stream.sent.get(type_url) == snapshot.version
                ):
                    continue
                bridge = self._bridge(stream, snapshot) if type_url == CLUSTER_TYPE else None
                if bridge is not None:
                    final_clusters, snapshot = snapshot, bridge
                if not await self._deliver(stream, type_url, snapshot):
                    return
            if final_clusters is not None:
                await self._deliver(stream, CLUSTER_TYPE, final_clusters)

    def _bridge(self, stream: _Stream, clusters: TypeSnapshot) -> TypeSnapshot | None:
        """The new clusters plus the ones last sent that the new snapshot drops, or None if none are.

        Streams of one view move between the same versions, so the bridge is built once for them all.
        """
        previous = stream.delivered.get(CLUSTER_TYPE)
        if previous is None:
            return None
        key = (previous.version, clusters.version)
        if key not in self._bridges:
            kept = {name for name, _ in clusters.resources}
            dropped = [(name, resource) for name, resource in previous.resources if name not in kept]
            if not dropped:
                return None
            if len(self._bridges) > 1000:
                self._bridges.clear()
            self._bridges[key] = TypeSnapshot(f"{clusters.version}+bridge", [*clusters.resources, *dropped])
        return self._bridges[key]

    async def _deliver(self, stream: _Stream, type_url: str, snapshot: TypeSnapshot) -> bool:
        """Send and wait for the ACK; False on a NACK or when the node does not answer in time."""
        waiter = self._send(stream, type_url, snapshot)
        if waiter is None:
            return True
        try:
            return await asyncio.wait_for(waiter, self.ack_timeout)
        except TimeoutError:
            return False

    def _on_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        names = tuple(sorted(request.resource_names))
        nonce = request.response_nonce
        if nonce and nonce != stream.nonces.get(type_url):
            return  # stale: answers a response that was superseded
        status = self.status(stream.node_id)
        waiter = stream.waiters.pop(nonce, None) if nonce else None
        if nonce and request.HasField("error_detail"):
            status.error = request.error_detail.message
            status.rejected[type_url] = stream.sent.get(type_url, "")
            if waiter and not waiter.done():
                waiter.set_result(False)
        elif nonce:
            status.acked[type_url] = request.version_info
            status.rejected.pop(type_url, None)
            if not status.rejected:
                status.error = None
            snapshot = self._current(stream, type_url)
            if snapshot and snapshot.version == request.version_info:
                self._last_good[(stream.node_id, type_url)] = snapshot
            if waiter and not waiter.done():
                waiter.set_result(True)
        self._changed.set()
        resubscribed = stream.names.get(type_url) != names
        stream.names[type_url] = names
        if not nonce or resubscribed:
            self._send(stream, type_url)

    async def _read(self, stream: _Stream, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for request in requests:
                self._on_request(stream, request)
        finally:
            stream.outbox.put_nowait(None)

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        """The stream's proven identity (None without an authenticator), or abort the call."""
        if self.authenticator is None:
            return None
        try:
            identity = await self.authenticator.authenticate(dict(context.invocation_metadata() or ()))
        except Unauthenticated as refused:
            log.info("xDS stream from %s refused: %s", context.peer(), refused)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(refused))
        limit = self.max_streams_per_identity
        if limit and self._per_identity[identity] >= limit:
            log.warning(
                "xDS stream from %s refused: %s already has %d streams", context.peer(), identity, limit
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{identity} already holds {limit} xDS streams"
            )
        return identity

    async def _stream_handler(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[bytes]:
        identity = await self._admit(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        stream = _Stream(identity=identity, node_id=first.node.id)
        if identity is not None and not _node_matches(stream.node_id, identity):
            pod = identity.pod or "<pod>"
            log.info(
                "xDS stream from %s refused: node id %r for %s", context.peer(), stream.node_id, identity
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node id {stream.node_id!r} is not {pod}.{identity.namespace}: the token is for {identity}",
            )
        self._register(stream)
        try:
            self._on_request(stream, first)
            if self._snapshot_key(stream) is None and self.on_new_view is not None:
                self.on_new_view(stream.namespace)
            reader = asyncio.create_task(self._read(stream, requests))
            try:
                while (response := await stream.outbox.get()) is not None:
                    yield response
            finally:
                reader.cancel()
        finally:
            self._unregister(stream)
            for waiter in stream.waiters.values():
                if not waiter.done():
                    waiter.cancel()

    def _register(self, stream: _Stream) -> None:
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
        if stream.identity is not None:
            self._per_identity[stream.identity] -= 1
            if self._per_identity[stream.identity] <= 0:
                del self._per_identity[stream.identity]
