"""Control-plane scale: simulated sidecars (light gRPC ADS clients) against one meshd control plane.

The control plane (MeshControlPlane + AdsServer, as `meshd control-plane` runs them) lives in a child
process, fed the objects of `--services` apex services (each a TrafficSplit over a primary and a
canary Service) spread over `--namespaces` namespaces, every route exported to every namespace (the
default, and the worst case: every sidecar is affected by every change). `--sidecars` clients connect
from this process, subscribe like Envoy (CDS, LDS, RDS) and ACK every response. Then `--changes`
weight changes are made one by one; for each, the time from the change to the ACK of the new routes
by every sidecar is recorded. Objects reach the control plane directly, not through a Kubernetes
watch (the watch costs one event per change).

Prints one JSON object: sidecars, services, ack_s_p50/p99/max (per sidecar and change), rss_mb of the
control plane after the run, cpu_s_per_push (control-plane CPU per weight change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from canaryctl.local.prometheus import free_port
from canaryctl.mesh import config
from canaryctl.mesh.ads import AdsServer
from canaryctl.mesh.control import MeshControlPlane

CONNECT_TIMEOUT = 300.0
ACK_TIMEOUT = 60.0


def namespace_objects(namespace: str, index: int, count: int, canary_weight: int = 0) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for i in range(count):
        name = f"svc{i}"
        for suffix, octet in (("", 1), ("-primary", 2), ("-canary", 3)):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name + suffix, "namespace": namespace},
                    "spec": {
                        "clusterIP": f"10.{index % 250}.{i % 250}.{octet + 3 * (i // 250)}",
                        "ports": [{"name": "http", "port": 80}],
                    },
                }
            )
        weight = canary_weight if i == 0 else 0
        objects.append(
            {
                "apiVersion": "split.smi-spec.io/v1alpha4",
                "kind": "TrafficSplit",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "service": name,
                    "backends": [
                        {"service": f"{name}-primary", "weight": 100 - weight},
                        {"service": f"{name}-canary", "weight": weight},
                    ],
                },
            }
        )
    return objects


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(port: int, services: int, namespaces: int) -> None:
    """The child: control plane on `port`; stdin lines 'change N' move namespace 0's svc0 canary to N %."""
    ads = AdsServer("127.0.0.1", port, ack_timeout=ACK_TIMEOUT)
    await ads.start()
    plane = MeshControlPlane(ads, config.SidecarPorts(), bind_host="127.0.0.1")
    per_namespace = services // namespaces
    plane.update({f"ns{n}": namespace_objects(f"ns{n}", n, per_namespace) for n in range(namespaces)})
    await plane.push()
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu_total = 0.0
    pushes = 0
    while line := (await reader.readline()).decode().split():
        if line[0] == "change":
            before = cpu_seconds()
            plane.update({"ns0": namespace_objects("ns0", 0, per_namespace, int(line[1]))})
            await plane.push()
            await asyncio.sleep(0)
            cpu_total += cpu_seconds() - before
            pushes += 1
            print(json.dumps({"pushed": line[1]}), flush=True)
        elif line[0] == "stats":
            # Let the sends of the last push finish before sampling (they run on this loop).
            await asyncio.sleep(1.0)
            stats = {"rss_mb": round(rss_mb(), 1), "cpu_s_per_push": round(cpu_total / max(1, pushes), 4)}
            print(json.dumps(stats), flush=True)
    await ads.stop()


class Sidecar:
    """Subscribes like Envoy and ACKs everything; records when each routes version was ACKed."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.node_id = node_id
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.routes_acked: dict[str, float] = {}
        self.ready = asyncio.Event()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.StreamAggregatedResources(self._requests())
        self.task = asyncio.create_task(self._run())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id=self.node_id), type_url=config.CLUSTER_TYPE
        )
        yield discovery_pb2.DiscoveryRequest(type_url=config.LISTENER_TYPE)
        names = [config.OUTBOUND_ROUTE_NAME, config.INBOUND_ROUTE_NAME, "prometheus"]
        yield discovery_pb2.DiscoveryRequest(type_url=config.ROUTE_TYPE, resource_names=names)
        while True:
            yield await self.requests.get()

    async def _run(self) -> None:
        names = {config.ROUTE_TYPE: [config.OUTBOUND_ROUTE_NAME, config.INBOUND_ROUTE_NAME, "prometheus"]}
        with contextlib.suppress(grpc.aio.AioRpcError):  # cancelled at the end of the run
            await self._acknowledge(names)

    async def _acknowledge(self, names: dict[str, list[str]]) -> None:
        async for response in self.call:
            self.requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=names.get(response.type_url, []),
                )
            )
            if response.type_url == config.ROUTE_TYPE:
                self.routes_acked[response.version_info] = time.monotonic()
                self.ready.set()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.meshd", "--serve", str(port), "--services", str(args.services),
         "--namespaces", str(args.namespaces)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    channels: list[grpc.aio.Channel] = []
    sidecars: list[Sidecar] = []
    try:
        assert json.loads(await asyncio.to_thread(child.stdout.readline)).get("ready")
        per_channel = 100
        for i in range(args.sidecars):
            if i % per_channel == 0:
                channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            sidecars.append(Sidecar(channels[-1], f"pod{i}.ns{i % args.namespaces}"))
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in sidecars)), CONNECT_TIMEOUT)
        connect_s = time.monotonic() - started
        latencies: list[float] = []
        change_p99: list[float] = []
        for change in range(args.changes):
            known = [set(s.routes_acked) for s in sidecars]
            began = time.monotonic()
            child.stdin.write(f"change {1 + change % 99}\n")
            child.stdin.flush()
            deadline = began + ACK_TIMEOUT
            while any(len(s.routes_acked) == len(k) for s, k in zip(sidecars, known, strict=True)):
                assert time.monotonic() < deadline, "not every sidecar ACKed the change"
                await asyncio.sleep(0.005)
            assert json.loads(await asyncio.to_thread(child.stdout.readline)).get("pushed")
            this = [
                max(t for v, t in s.routes_acked.items() if v not in k) - began
                for s, k in zip(sidecars, known, strict=True)
            ]
            latencies += this
            change_p99.append(percentile(this, 0.99))
            await asyncio.sleep(args.pause)
        child.stdin.write("stats\n")
        child.stdin.flush()
        stats = json.loads(await asyncio.to_thread(child.stdout.readline))
    finally:
        for sidecar in sidecars:
            sidecar.call.cancel()
        for channel in channels:
            await channel.close()
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return {
        "sidecars": args.sidecars,
        "services": args.services,
        "namespaces": args.namespaces,
        "changes": args.changes,
        "ack_s_p50": round(statistics.median(latencies), 3),
        "ack_s_p99": round(percentile(latencies, 0.99), 3),
        "ack_s_max": round(max(latencies), 3),
        "ack_s_p99_worst_change": round(max(change_p99), 3),
        "connect_all_s": round(connect_s, 2),
        **stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, default=2000)
    parser.add_argument("--services", type=int, default=1000, help="apex services under a TrafficSplit")
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between changes")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.services, args.namespaces))
        return
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
