"""The ADS server's SotW bookkeeping seen by a real gRPC client: ordering, ACK, NACK, stale nonces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer

CDS, LDS, RDS = config.CLUSTER_TYPE, config.LISTENER_TYPE, config.ROUTE_TYPE


def _resources(port: int) -> config.Resources:
    backend = config.Backend(name="web-primary", address="127.0.0.1", port=port)
    spec = config.RouteSpec(service="web", backends=(config.WeightedBackend(backend=backend, weight=1),))
    return config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")


class Client:
    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(self._requests())
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Read in the background: cancelling a pending read would cancel the whole gRPC call."""
        async for response in self.call:
            self.responses.put_nowait(response)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self.requests.get()

    def send(
        self, type_url: str, version: str = "", nonce: str = "", names: tuple[str, ...] = (), **kw: object
    ) -> None:
        self.requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id="n1"),
                type_url=type_url,
                version_info=version,
                response_nonce=nonce,
                resource_names=list(names),
                **kw,
            )
        )

    async def receive(self, timeout: float = 2.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        self.send(response.type_url, response.version_info, response.nonce, names)


def test_push_waits_for_cluster_ack_before_routes() -> None:
    async def run() -> None:
        async with AdsServer() as ads:
            await ads.set_snapshot("*", _resources(1000))
            client = Client(ads.port)
            client.send(CDS)
            cds = await client.receive()
            client.ack(cds)
            client.send(LDS)
            lds = await client.receive()
            client.ack(lds)
            client.send(RDS, names=("local",))
            rds = await client.receive()
            client.ack(rds, ("local",))
            await ads.wait_acked("n1")
            assert [cds.type_url, lds.type_url, rds.type_url] == [CDS, LDS, RDS]

            # Clusters and routes both change: routes wait until the clusters are ACKed.
            changed = _resources(2000)
            changed.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]["timeout"] = "7s"
            await ads.set_snapshot("n1", changed)
            cds2 = await client.receive()
            assert cds2.type_url == CDS and cds2.nonce != cds.nonce
            try:
                early = await client.receive(timeout=0.3)
            except TimeoutError:
                early = None
            assert early is None, "routes were sent before the clusters were acknowledged"

            # A stale nonce (answering the first CDS response) is ignored.
            client.ack(cds)
            # NACK the new clusters: routes are not sent, the error is kept, the last good stays acked.
            client.send(
                CDS, cds.version_info, cds2.nonce, error_detail=status_pb2.Status(message="bad cluster")
            )
            await asyncio.sleep(0.2)
            status = ads.status("n1")
            assert status.error == "bad cluster"
            assert status.acked[CDS] == cds.version_info and status.rejected[CDS] == cds2.version_info

            # A fixed snapshot: new clusters go out; its routes equal what the client already has, so
            # nothing else is sent and the node counts as converged once the clusters are ACKed.
            await ads.set_snapshot("n1", _resources(3000))
            cds3 = await client.receive()
            assert cds3.type_url == CDS
            client.ack(cds3)
            await ads.wait_acked("n1")
            assert client.responses.empty()
            client.call.cancel()
            client.reader.cancel()
            await client.channel.close()

    asyncio.run(run())
