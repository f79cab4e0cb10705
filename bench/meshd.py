"""Control-plane scale: simulated sidecars (light gRPC delta-ADS clients) against one meshd control
plane fed through a Kubernetes watch.

Three processes, so each one's CPU and memory are its own:

- the API: kmock's Kubernetes emulator (from tests/kube) holding `--services` apex services (each a
  TrafficSplit over a primary and a canary Service) over `--namespaces` namespaces, and answering
  TokenReviews for the sidecars' tokens;
- the control plane: `ControlPlane` as `meshd control-plane` runs it (reflectors list and then watch
  the API; TLS from a mesh CA, pod-bound tokens checked by TokenReview, 8 streams per identity;
  `--insecure` for plaintext without tokens);
- this one: `--sidecars` simulated sidecars, each on its own connection with its own token,
  subscribing as Envoy does (clusters, listeners, the three route configurations, virtual hosts)
  and ACKing every response, with Envoy's HTTP/2 flow control (a fixed 256 MiB window, no PINGs
  probing for one) and meshd's garbage-collector threshold (Envoy has no collector; without it this
  process spent CPU the control plane shares on collections).

Every route is exported to every namespace (the default, and the worst case: every sidecar is
affected by every change). Then `--changes` weight changes are made one after the other, each by
patching ns0/svc0's TrafficSplit through the API, and for each:

- ack_s: from the PATCH request to the control plane receiving each sidecar's ACK of the virtual host
  carrying the new weight; before that, every sidecar must have received the new weight (decoded
  from the virtual host it got), else the run fails (ack_s_first_p50: the median over the changes
  of each one's first ACK);
- cpu_s_per_push: the control plane's CPU time from just before the PATCH until it has every ACK;
  sidecars_cpu_s_per_push: this process's, until every sidecar has the new weight (the simulated
  sidecars share the machine with the control plane).

Also: connect_all_s (from the first connection until every sidecar holds its whole first config),
stream_retries (streams the sidecars had to open again, after a jittered backoff as Envoy does),
rss_mb and rss_mb_peak (the control plane's resident memory after the run, and its peak), and the
machine's 1-minute load average before and after.

    python -m bench.meshd [--sidecars 2000 --services 1000 --namespaces 50 --changes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any, NamedTuple

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from canaryctl_mesh import config
from canaryctl_mesh.ads import VIRTUAL_HOST_TYPE, AdsServer
from canaryctl_mesh.identity import POD_NAME_EXTRA, TOKEN_AUDIENCE
from canaryctl_mesh.kube import KubeObjects, api_client_for_host
from canaryctl_mesh.meshd import runtime
from canaryctl_mesh.meshd.cli import xds_server
from canaryctl_mesh.meshd.control_plane import ControlPlane
from canaryctl_mesh.meshd.pki import CertificateAuthority
from canaryctl_mesh.meshd.tls import IssuedCertificate
from canaryctl_mesh.meshd.watch import Backoff
from tests.mesh.objects import meshed_service, traffic_split

SERVER_NAME = "canaryctl-mesh.canaryctl-system.svc"
CONNECT_TIMEOUT = 600.0
CHANGE_TIMEOUT = 60.0
CHANGED = "svc0"
WATCHED_HOST = f"{config.OUTBOUND_ROUTE_NAME}/{CHANGED}_ns0"
CANARY_CLUSTER = f"{CHANGED}-canary_ns0"
SUBSCRIPTIONS = (
    (config.CLUSTER_TYPE, ()),
    (config.LISTENER_TYPE, ()),
    (config.ROUTE_TYPE, (config.OUTBOUND_ROUTE_NAME, config.INBOUND_ROUTE_NAME, "prometheus")),
    (VIRTUAL_HOST_TYPE, ()),
)


def namespace_objects(namespace: str, index: int, count: int) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for i in range(count):
        a, b, c = (f"10.{index % 250}.{i % 250}.{octet + 3 * (i // 250)}" for octet in (1, 2, 3))
        objects += meshed_service(namespace, f"svc{i}", (a, b, c), 0)
    return objects


def token_of(node_id: str) -> str:
    return f"token-{node_id}"


def memory_mb() -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": found["VmRSS"], "rss_mb_peak": found["VmHWM"]}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


# --- the API process -----------------------------------------------------------------------------------


async def serve_api(services: int, namespaces: int) -> None:
    from tests.kube.emulator import emulator_url, running_emulator

    def token_review(request: Any) -> dict[str, Any]:
        """Answered as kube-apiserver does for a pod-bound token; never stored."""
        spec = request.data["spec"]
        pod, _, namespace = spec["token"].removeprefix("token-").rpartition(".")
        user = {"username": f"system:serviceaccount:{namespace}:default", "extra": {POD_NAME_EXTRA: [pod]}}
        status = {"authenticated": True, "user": user, "audiences": [TOKEN_AUDIENCE]}
        for key in [k for k in emulator.objects if "tokenreviews" in str(k[0])]:
            del emulator.objects[key]
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
            "status": status,
        }

    plurals = {"Service": "v1/services", "TrafficSplit": "split.smi-spec.io/v1alpha4/trafficsplits"}
    async with running_emulator(keep_requests=False) as emulator:
        emulator["post /apis/authentication.k8s.io/v1/tokenreviews"] << token_review
        per_namespace = services // namespaces
        for n in range(namespaces):
            for obj in namespace_objects(f"ns{n}", n, per_namespace):
                meta = obj["metadata"]
                meta.update(resourceVersion="1", uid=f"{obj['kind']}-{meta['namespace']}-{meta['name']}")
                meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
                emulator.objects[plurals[obj["kind"]], meta["namespace"], meta["name"]] = obj
        say({"url": emulator_url(emulator)})
        reader = await stdin_lines()
        while await reader.readline():  # EOF (the parent is done or gone) ends the process
            pass


# --- the control-plane process -------------------------------------------------------------------------


async def serve_control_plane(url: str, insecure: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="control plane: %(levelname)s %(name)s %(message)s")
    api = api_client_for_host(url)
    ca = CertificateAuthority.create("bench mesh CA")
    ads = (
        AdsServer("127.0.0.1", 0)
        if insecure
        else xds_server(api, IssuedCertificate(ca, [SERVER_NAME]), host="127.0.0.1", port=0)
    )
    plane = ControlPlane(api, (), ads=ads, bind_host="127.0.0.1", events=False)
    async with plane:
        while not plane.version:  # the first list of every watched resource, translated and pushed
            await asyncio.sleep(0.05)
        say({"port": ads.port, "ca": ca.cert_pem.decode()})
        reader = await stdin_lines()
        marked = cpu_seconds()
        while command := (await reader.readline()).decode().split():
            if command[0] == "mark":
                marked = cpu_seconds()
                say({"marked": True})
            elif command[0] == "acks":
                deadline = time.monotonic() + CHANGE_TIMEOUT
                nodes = sorted(ads.nodes())
                for node in nodes:
                    await ads.wait_acked(node, max(0.1, deadline - time.monotonic()))
                used = cpu_seconds() - marked
                acked_at = {node: ads.status(node).acked_at[VIRTUAL_HOST_TYPE] for node in nodes}
                say({"acked_at": acked_at, "cpu_s": used})
            elif command[0] == "stats":
                say(memory_mb())
    api.close()  # type: ignore[no-untyped-call]


# --- the sidecars ----------------------------------------------------------------------------------------


class Sidecar:
    """Subscribes as Envoy does and ACKs every response; notes when each weight of the watched service's
    canary arrived (decoded from the virtual host received). A stream that fails is opened again after
    a jittered backoff from 0.5 s, as Envoy does, reporting what it holds."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        node_id: str,
        metadata: tuple[tuple[str, str], ...],
        arrivals: Counter[int],
    ) -> None:
        self.channel = channel
        self.arrivals = arrivals
        """Sidecars holding each weight, shared by all: waiting for a change costs no scan of them."""
        self.node_id = node_id
        self.metadata = metadata
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.held: dict[str, dict[str, str]] = {type_url: {} for type_url, _ in SUBSCRIPTIONS}
        self.answered: set[str] = set()
        self.weight_at: dict[int, float] = {}
        self.retries = 0
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        backoff = Backoff(initial=0.5)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stream()
            self.retries += 1
            await asyncio.sleep(backoff.next())

    async def _stream(self) -> None:
        call = self.stub.DeltaAggregatedResources(metadata=self.metadata, wait_for_ready=True)
        for index, (type_url, names) in enumerate(SUBSCRIPTIONS):
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url,
                resource_names_subscribe=names,
                initial_resource_versions=self.held[type_url],
            )
            if index == 0:
                request.node.CopyFrom(base_pb2.Node(id=self.node_id))
            await call.write(request)
        while (response := await call.read()) is not grpc.aio.EOF:
            assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
            held = self.held[response.type_url]
            held.update((item.name, item.version) for item in response.resources)
            for name in response.removed_resources:
                held.pop(name, None)
            if response.type_url == VIRTUAL_HOST_TYPE:
                self._note_weight(response)
            ack = discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            )
            await call.write(ack)
            self.answered.add(response.type_url)
            if len(self.answered) == len(SUBSCRIPTIONS) and self.weight_at:
                self.ready.set()

    def _note_weight(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        for item in response.resources:
            if item.name == WATCHED_HOST:
                host = route_components_pb2.VirtualHost()
                item.resource.Unpack(host)
                for cluster in host.routes[-1].route.weighted_clusters.clusters:
                    weight = cluster.weight.value
                    if cluster.name == CANARY_CLUSTER and weight not in self.weight_at:
                        self.weight_at[weight] = time.monotonic()
                        self.arrivals[weight] += 1

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


def channel(port: int, ca_pem: str | None) -> grpc.aio.Channel:
    # Its own connection, as each sidecar has (gRPC would otherwise share one between channels); and
    # Envoy's HTTP/2 flow control: a fixed 256 MiB window (its default), no PINGs probing for one.
    options: list[tuple[str, str | int]] = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 256 << 20),
    ]
    if ca_pem is None:
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    credentials = grpc.ssl_channel_credentials(ca_pem.encode())
    options.append(("grpc.ssl_target_name_override", SERVER_NAME))
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Child:
    """A child process speaking JSON lines."""

    def __init__(self, *args: str, module: str = "bench.meshd") -> None:
        command = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ask(self, line: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = await asyncio.to_thread(self.proc.stdout.readline)
        if not answer:
            raise RuntimeError(f"{self.proc.args!r} exited with {self.proc.wait()}")
        found: dict[str, Any] = json.loads(answer)
        return found

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Change(NamedTuple):
    acks_s: list[float]
    """Seconds from the PATCH to each sidecar's ACK reaching the control plane."""
    control_plane_cpu_s: float
    sidecars_cpu_s: float
    """CPU this process (the simulated sidecars) spent until every one had the new weight."""


async def change_weight(
    objects: KubeObjects, plane: Child, sidecars: list[Sidecar], arrivals: Counter[int], weight: int
) -> Change:
    """One weight change through the API, until every sidecar received it and its ACK arrived."""
    await plane.ask("mark")
    began, cpu = time.monotonic(), cpu_seconds()
    await objects.apply(traffic_split("ns0", CHANGED, (100 - weight, weight)))
    deadline = began + CHANGE_TIMEOUT
    while arrivals[weight] < len(sidecars):
        if time.monotonic() > deadline:
            missing = len(sidecars) - arrivals[weight]
            raise AssertionError(f"{missing} sidecars never received canary weight {weight}")
        await asyncio.sleep(0.01)
    sidecars_cpu = cpu_seconds() - cpu
    acks = await plane.ask("acks")
    if len(acks["acked_at"]) != len(sidecars):
        raise AssertionError(f"{len(acks['acked_at'])} of {len(sidecars)} sidecars are connected")
    return Change([at - began for at in acks["acked_at"].values()], float(acks["cpu_s"]), sidecars_cpu)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    # The simulated sidecars hold objects in flight per stream during a push as meshd does (Envoy has no
    # garbage collector): without this their process spent CPU on collections the machine shares.
    runtime.tune_collector()
    api = Child("--api", "--services", str(args.services), "--namespaces", str(args.namespaces))
    plane: Child | None = None
    sidecars: list[Sidecar] = []
    arrivals: Counter[int] = Counter()
    changes: list[Change] = []
    try:
        url = (await api.ask())["url"]
        plane = Child("--control-plane", url, *(["--insecure"] if args.insecure else []))
        started = await plane.ask()
        ca_pem = None if args.insecure else started["ca"]
        began = time.monotonic()
        for i in range(args.sidecars):
            node = f"pod{i}.ns{i % args.namespaces}"
            metadata = () if args.insecure else (("authorization", f"Bearer {token_of(node)}"),)
            sidecars.append(Sidecar(channel(started["port"], ca_pem), node, metadata, arrivals))
        while (ready := sum(s.ready.is_set() for s in sidecars)) < len(sidecars):
            if time.monotonic() - began > CONNECT_TIMEOUT:
                raise AssertionError(
                    f"{ready} of {len(sidecars)} sidecars got their config in {CONNECT_TIMEOUT}s"
                )
            retries = sum(s.retries for s in sidecars)
            print(f"{time.monotonic() - began:.0f}s: {ready} sidecars have their config ({retries} retries)",
                  file=sys.stderr)  # fmt: skip
            await asyncio.sleep(5)
        connect_s = time.monotonic() - began
        kube = api_client_for_host(url)
        objects = KubeObjects(kube)
        for change in range(args.changes):
            changes.append(await change_weight(objects, plane, sidecars, arrivals, 1 + change % 99))
            await asyncio.sleep(args.pause)
        kube.close()  # type: ignore[no-untyped-call]
        memory = await plane.ask("stats")
    finally:
        await asyncio.gather(*(s.close() for s in sidecars))
        for child in (plane, api):
            if child is not None:
                child.stop()
    acks = [ack for change in changes for ack in change.acks_s]
    return {
        "sidecars": args.sidecars,
        "services": args.services,
        "namespaces": args.namespaces,
        "changes": args.changes,
        "tls_and_tokens": not args.insecure,
        "ack_s_first_p50": round(statistics.median(min(c.acks_s) for c in changes), 3),
        "ack_s_p50": round(statistics.median(acks), 3),
        "ack_s_p99": round(percentile(acks, 0.99), 3),
        "ack_s_max": round(max(acks), 3),
        "ack_s_p99_worst_change": round(max(percentile(c.acks_s, 0.99) for c in changes), 3),
        "cpu_s_per_push": round(statistics.mean(c.control_plane_cpu_s for c in changes), 3),
        "sidecars_cpu_s_per_push": round(statistics.mean(c.sidecars_cpu_s for c in changes), 3),
        "connect_all_s": round(connect_s, 2),
        "stream_retries": sum(s.retries for s in sidecars),
        **memory,
        "load_avg_1m": [round(load, 1) for load in (load_before, os.getloadavg()[0])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, default=2000)
    parser.add_argument("--services", type=int, default=1000, help="apex services under a TrafficSplit")
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between changes")
    parser.add_argument("--insecure", action="store_true", help="plaintext xDS without tokens")
    parser.add_argument("--api", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--control-plane", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.api:
        asyncio.run(serve_api(args.services, args.namespaces))
    elif args.control_plane:
        runtime.run(serve_control_plane(args.control_plane, args.insecure))
    else:
        print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
