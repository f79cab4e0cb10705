"""State-of-the-world gRPC ADS server for sidecars.

Per stream it tracks version, nonce and subscribed names per type; a push sends clusters, waits for
their ACK, then listeners, then routes (a route to an unknown cluster 503s). A NACK is recorded and
never overwrites the last version the node acknowledged: new streams from that node get the last
good resources of a rejected type, and Envoy itself keeps serving them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator
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
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from canaryctl_mesh.config import CLUSTER_TYPE, TYPE_ORDER, Resources

ANY_NODE = "*"


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    resources: list[tuple[str, any_pb2.Any]]


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
    digest = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]
    return TypeSnapshot(digest, encoded)


@dataclass
class NodeStatus:
    """What one node acknowledged, and what it rejected (with the error) since its last ACK of that type."""

    acked: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Stream:
    node_id: str = ""
    outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = field(default_factory=asyncio.Queue)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, TypeSnapshot] = field(default_factory=dict)
    nonces: dict[str, str] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    push_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, host: str = "127.0.0.1", port: int = 0, ack_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.ack_timeout = ack_timeout
        self._server: grpc.aio.Server | None = None
        self._snapshots: dict[str, dict[str, TypeSnapshot]] = {}
        self._last_good: dict[tuple[str, str], TypeSnapshot] = {}
        self._streams: set[_Stream] = set()
        self._status: dict[str, NodeStatus] = {}
        self._nonce = itertools.count(1)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
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

    async def set_snapshot(self, node_id: str, resources: Resources) -> str:
        """Make `resources` the desired state of `node_id` (or every node: "*"); returns its version.

        Raises ValueError for resources that do not parse, leaving the previous snapshot in place.
        """
        snapshot = {type_url: encode(type_url, items) for type_url, items in resources.by_type().items()}
        self._snapshots[node_id] = snapshot
        for stream in list(self._streams):
            if self._snapshot_key(stream.node_id) == node_id:
                task = asyncio.create_task(self._push(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return self.snapshot_version(node_id)

    def snapshot_version(self, node_id: str) -> str:
        snapshot = self._snapshots.get(node_id, {})
        return "-".join(snapshot[t].version for t in TYPE_ORDER if t in snapshot)

    def status(self, node_id: str) -> NodeStatus:
        return self._status.setdefault(node_id, NodeStatus())

    async def wait_acked(self, node_id: str, timeout: float = 10.0) -> NodeStatus:
        """Wait until `node_id` acknowledged its current snapshot; raises RuntimeError on a NACK."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(node_id)
            snapshot = self._snapshots.get(self._snapshot_key(node_id), {})
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

    def _snapshot_key(self, node_id: str) -> str:
        return node_id if node_id in self._snapshots else ANY_NODE

    def _current(self, stream: _Stream, type_url: str) -> TypeSnapshot | None:
        """The snapshot to send, or the node's last good one when the node rejected the current."""
        key = self._snapshot_key(stream.node_id)
        current = self._snapshots.get(key, {}).get(type_url)
        if current and self.status(stream.node_id).rejected.get(type_url) == current.version:
            return self._last_good.get((stream.node_id, type_url))
        return current

    def _send(
        self, stream: _Stream, type_url: str, snapshot: TypeSnapshot | None = None
    ) -> asyncio.Future[bool] | None:
        snapshot = snapshot or self._current(stream, type_url)
        if snapshot is None:
            return None
        names = set(stream.names.get(type_url, ()))
        resources = [r for name, r in snapshot.resources if not names or name in names]
        nonce = str(next(self._nonce))
        stream.sent[type_url] = snapshot.version
        stream.delivered[type_url] = snapshot
        stream.nonces[type_url] = nonce
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stream.waiters[nonce] = waiter
        stream.outbox.put_nowait(
            discovery_pb2.DiscoveryResponse(
                version_info=snapshot.version, resources=resources, type_url=type_url, nonce=nonce
            )
        )
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

    @staticmethod
    def _bridge(stream: _Stream, clusters: TypeSnapshot) -> TypeSnapshot | None:
        """The new clusters plus the ones last sent that the new snapshot drops, or None if none are."""
        previous = stream.delivered.get(CLUSTER_TYPE)
        if previous is None:
            return None
        kept = {name for name, _ in clusters.resources}
        dropped = [(name, resource) for name, resource in previous.resources if name not in kept]
        if not dropped:
            return None
        return TypeSnapshot(f"{clusters.version}+bridge", [*clusters.resources, *dropped])

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
        if not stream.node_id:
            stream.node_id = request.node.id
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

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream()
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(stream, request_iterator))
        try:
            while (response := await stream.outbox.get()) is not None:
                yield response
        finally:
            reader.cancel()
            self._streams.discard(stream)
            for waiter in stream.waiters.values():
                if not waiter.done():
                    waiter.cancel()
