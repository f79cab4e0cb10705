"""A raw gRPC delta ADS client that subscribes, ACKs and NACKs as Envoy does (the first request of a
stream carries the node; no names means a wildcard subscription)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TypeAlias

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import message
from google.rpc import status_pb2

Response: TypeAlias = discovery_pb2.DeltaDiscoveryResponse


class DeltaClient:
    def __init__(
        self, channel: grpc.aio.Channel, node_id: str, metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.channel = channel
        self.node_id = node_id
        self._requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self._sent_node = False
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.DeltaAggregatedResources(
            self._stream(), metadata=tuple(metadata), wait_for_ready=True
        )
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    def insecure(cls, port: int, node_id: str) -> DeltaClient:
        return cls(grpc.aio.insecure_channel(f"127.0.0.1:{port}"), node_id)

    async def _stream(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while True:
            yield await self._requests.get()

    async def _read(self) -> None:
        """Read in the background: cancelling a pending read would cancel the whole gRPC call."""
        async for response in self.call:
            self.responses.put_nowait(response)

    def _send(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if not self._sent_node:
            request.node.CopyFrom(base_pb2.Node(id=self.node_id))
            self._sent_node = True
        self._requests.put_nowait(request)

    def subscribe(
        self, type_url: str, names: Sequence[str] = (), held: Mapping[str, str] | None = None
    ) -> None:
        """Subscribe to `names` of a type (none: all of them), reporting the versions `held`."""
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=list(names), initial_resource_versions=held or {}
            )
        )

    def unsubscribe(self, type_url: str, names: Sequence[str]) -> None:
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_unsubscribe=list(names))
        )

    def ack(self, response: Response, error: str | None = None) -> None:
        """ACK `response`, or NACK it with `error`."""
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=response.type_url, response_nonce=response.nonce
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._send(request)

    async def receive(self, timeout: float = 5.0) -> Response:
        """The next response; raises the call's error if it ended, TimeoutError if none came."""
        getter = asyncio.ensure_future(self.responses.get())
        await asyncio.wait({getter, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        if self._reader.done():
            self._reader.result()
            raise AssertionError("the server ended the stream")
        raise TimeoutError(f"no response within {timeout}s")

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.receive(seconds)
        except TimeoutError:
            return True
        return False

    async def refused(self) -> grpc.StatusCode:
        """The status the server ended the call with (the call must fail within 10 s)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        raise AssertionError("the stream was not refused")

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close()


def unpack(response: Response, into: type[message.Message]) -> dict[str, message.Message]:
    """The resources of a response by name, decoded as `into`."""
    decoded = {}
    for resource in response.resources:
        item = into()
        resource.resource.Unpack(item)
        decoded[resource.name] = item
    return decoded
