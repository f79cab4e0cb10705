"""Mesh benchmark: split accuracy, mirror and fault ratios, ADS propagation, proxy and mTLS overhead.

Everything runs on loopback: an ADS control plane, one Envoy, two upstreams in a child process (so
they do not compete with the client for the GIL). Prints progress lines, then one JSON object last.

mTLS overhead: a caller's sidecar and a server's sidecar (two more Envoys, fed by a secured control
plane with workload certificates over SDS) in front of the primary upstream; requests cross them
over mesh mTLS and, interleaved at the same rate, over plaintext (the permissive chain); the
difference is what mTLS adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Identity, Unauthenticated
from canaryctl_mesh.loopback import HttpConnection, fire
from canaryctl_mesh.meshd.pki import CertificateAuthority
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.meshd.workload import WorkloadCertificates
from canaryctl_mesh.process import EnvoyProcess

PRIMARY, CANARY = "primary", "canary"
NODE = "bench"

_UPSTREAM_CHILD = """
import sys
from canaryctl_mesh.loopback import UpstreamServers
with UpstreamServers(["primary", "canary"]) as servers:
    print(servers["primary"].port, servers["canary"].port, flush=True)
    sys.stdin.read()
    print(servers["canary"].requests, servers["canary"].shadow_requests, flush=True)
"""


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.ads = AdsServer()
        self.envoy: EnvoyProcess | None = None
        self.listen_port = 0

    def resources(self, primary: int, canary: int, **fields: Any) -> config.Resources:
        backends = tuple(
            config.WeightedBackend(
                backend=config.Backend(name=name, address="127.0.0.1", port=self.ports[name]), weight=weight
            )
            for name, weight in ((PRIMARY, primary), (CANARY, canary))
        )
        spec = config.RouteSpec(service="bench", backends=backends, **fields)
        return config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")

    async def route(self, primary: int, canary: int, **fields: Any) -> None:
        await self.ads.set_snapshot(NODE, self.resources(primary, canary, **fields))
        await self.ads.wait_acked(NODE)

    async def start(self) -> None:
        port = await self.ads.start()
        await self.ads.set_snapshot(NODE, self.resources(100, 0))
        self.envoy = EnvoyProcess(config.ads_bootstrap(NODE, "127.0.0.1", port, admin_port=0), concurrency=2)
        await self.envoy.start()
        self.listen_port = await self.envoy.listener_port("local")
        await self.ads.wait_acked(NODE)

    async def stop(self) -> None:
        if self.envoy:
            await self.envoy.stop()
        await self.ads.stop()

    async def split(self, requests: int) -> dict[str, float]:
        await self.route(90, 10)
        result = await fire("127.0.0.1", self.listen_port, requests, 16)
        observed = result.bodies[CANARY] / requests
        z = (observed - 0.1) / math.sqrt(0.1 * 0.9 / requests)
        return {
            "split_target_pct": 10.0,
            "split_observed_pct": round(observed * 100, 3),
            "split_z": round(z, 3),
        }

    async def fault(self, requests: int) -> float:
        abort = config.Fault(abort=config.FaultAbort(status=503, percentage=20))
        await self.route(0, 100, faults={CANARY: abort})
        result = await fire("127.0.0.1", self.listen_port, requests, 16)
        return result.statuses[503] / requests

    async def mirror(self, requests: int) -> None:
        await self.route(100, 0, mirror=config.Mirror(backend=CANARY, percentage=50))
        await fire("127.0.0.1", self.listen_port, requests, 16)
        await self.route(100, 0)

    async def propagation(self, changes: int) -> list[float]:
        """Milliseconds from set_snapshot to the first request served by the new route, over ADS."""
        conn = HttpConnection("127.0.0.1", self.listen_port)
        samples = []
        try:
            for i in range(changes):
                target = CANARY if i % 2 == 0 else PRIMARY
                weights = (0, 100) if target == CANARY else (100, 0)
                began = time.perf_counter()
                await self.ads.set_snapshot(NODE, self.resources(*weights))
                for _ in range(20_000):
                    if (await conn.request())[1].decode() == target:
                        break
                else:
                    raise RuntimeError(f"change {i} never propagated")
                samples.append((time.perf_counter() - began) * 1000)
        finally:
            await conn.close()
        return samples

    async def overhead(self, upstream_port: int, seconds: float, rate: float) -> dict[str, float]:
        """Direct and proxied requests interleaved at `rate` each, so both see the same machine load."""
        await self.route(100, 0)
        n = int(seconds * rate)
        proxied, direct = await asyncio.gather(
            fire("127.0.0.1", self.listen_port, n, 4, rate=rate),
            fire("127.0.0.1", upstream_port, n, 4, rate=rate),
        )
        p, d = proxied.latencies_ms, direct.latencies_ms
        return {
            "overhead_ms_p50": round(statistics.median(p) - statistics.median(d), 3),
            "overhead_ms_p99": round(_percentile(p, 99) - _percentile(d, 99), 3),
            "direct_ms_p50": round(statistics.median(d), 3),
            "proxied_ms_p50": round(statistics.median(p), 3),
            "rps": round(len(p) / seconds, 1),
        }


class _Tokens:
    """Tokens to identities, standing in for the API server's TokenReview."""

    def __init__(self, identities: dict[str, Identity]) -> None:
        self.identities = identities

    async def authenticate(self, metadata: Mapping[str, str]) -> Identity:
        found = self.identities.get((metadata.get("authorization") or "").removeprefix("Bearer "))
        if found is None:
            raise Unauthenticated("unknown token")
        return found


class MtlsBench:
    """A caller's and a server's sidecar on loopback; `mtls` and `plain` are the caller's listeners
    reaching the server's inbound listener over mesh mTLS and over plaintext. Each is alone in its
    namespace: an authenticated sidecar gets its namespace's view."""

    XDS_NAME = "meshd.bench"

    def __init__(self, upstream_port: int, workdir: Path) -> None:
        self.upstream_port = upstream_port
        self.workdir = workdir
        self.ca = CertificateAuthority.create("bench mesh CA")
        self.identities = {f"{name}-token": Identity(name, name, name) for name in ("caller", "server")}
        self.ads = AdsServer(
            credentials=xds_credentials(IssuedCertificate(self.ca, [self.XDS_NAME])),
            authenticator=_Tokens(self.identities),
        )
        self.ads.secrets = WorkloadCertificates(self.ca).secrets
        self.envoys: dict[str, EnvoyProcess] = {}

    def _sidecar(self, name: str, port: int) -> EnvoyProcess:
        token = self.workdir / f"{name}.token"
        token.write_text(f"{name}-token")
        auth = config.XdsAuth(self.ca.trust_pem.decode(), str(token), self.XDS_NAME)
        node = f"{name}.{name}"
        return EnvoyProcess(
            config.ads_bootstrap(node, "127.0.0.1", port, admin_port=0, auth=auth), concurrency=2
        )

    def _server(self) -> config.Resources:
        inbound = config.http_connection_manager(
            "inbound", config.INBOUND_ROUTE_NAME, config.ads_source(), "/dev/null"
        )
        app = config.Backend(name="app", address="127.0.0.1", port=self.upstream_port)
        listener = config.capture_listener("inbound", "127.0.0.1", 0, inbound, "app", (), config.PERMISSIVE)
        route = config.build_route_config(config.INBOUND_ROUTE_NAME, [], catch_all="app")
        spec = config.RouteSpec(service="app", backends=(config.WeightedBackend(backend=app, weight=1),))
        return config.Resources(config.build_clusters([spec]), [listener], [route])

    def _caller(self, server_port: int) -> config.Resources:
        server = Identity("server", "server").spiffe_id(DEFAULT_TRUST_DOMAIN)
        resources = config.Resources()
        for name, peers in (("mtls", (("127.0.0.1", server),)), ("plain", ())):
            backend = config.Backend(name=name, address="127.0.0.1", port=server_port, peers=peers)
            spec = config.RouteSpec(
                service=name, backends=(config.WeightedBackend(backend=backend, weight=1),)
            )
            local = config.local_resources(spec, "127.0.0.1", 0, config.ads_source(), "/dev/null")
            listener, route = local.listeners[0], local.routes[0]
            hcm = config.http_connection_manager(name, name, config.ads_source(), "/dev/null")
            resources.clusters.extend(local.clusters)
            resources.listeners.append({**listener, "name": name, "filter_chains": [{"filters": [hcm]}]})
            resources.routes.append({**route, "name": name})
        return resources

    async def start(self) -> dict[str, int]:
        port = await self.ads.start()
        await self.ads.set_snapshot("server", self._server())
        self.envoys["server"] = self._sidecar("server", port)
        await self.envoys["server"].start()
        server_port = await self.envoys["server"].listener_port("inbound")
        await self.ads.set_snapshot("caller", self._caller(server_port))
        self.envoys["caller"] = self._sidecar("caller", port)
        await self.envoys["caller"].start()
        await self.ads.wait_acked("caller.caller")
        return {name: await self.envoys["caller"].listener_port(name) for name in ("mtls", "plain")}

    async def stop(self) -> None:
        for envoy in self.envoys.values():
            await envoy.stop()
        await self.ads.stop()

    async def overhead(self, seconds: float, rate: float) -> dict[str, float]:
        ports = await self.start()
        n = int(seconds * rate)
        await asyncio.gather(*(fire("127.0.0.1", port, 200, 4) for port in ports.values()))  # warm up
        mtls, plain = await asyncio.gather(
            fire("127.0.0.1", ports["mtls"], n, 4, rate=rate),
            fire("127.0.0.1", ports["plain"], n, 4, rate=rate),
        )
        if mtls.statuses != {200: n} or plain.statuses != {200: n}:
            raise RuntimeError(
                f"failed requests: mtls {dict(mtls.statuses)}, plaintext {dict(plain.statuses)}"
            )
        handshakes = await self.envoys["caller"].stats(r"cluster\.(mtls|plain)\.ssl\.handshake")
        if not handshakes.get("cluster.mtls.ssl.handshake") or handshakes.get("cluster.plain.ssl.handshake"):
            raise RuntimeError(f"mTLS to the mtls cluster only, plaintext to the other: {handshakes}")
        m, p = mtls.latencies_ms, plain.latencies_ms
        return {
            "mtls_overhead_ms_p50": round(statistics.median(m) - statistics.median(p), 3),
            "mtls_overhead_ms_p99": round(_percentile(m, 99) - _percentile(p, 99), 3),
            "mtls_ms_p50": round(statistics.median(m), 3),
            "mtls_ms_p99": round(_percentile(m, 99), 3),
            "mtls_plaintext_ms_p50": round(statistics.median(p), 3),
            "mtls_plaintext_ms_p99": round(_percentile(p, 99), 3),
            "mtls_rps": round(len(m) / seconds, 1),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, "-c", _UPSTREAM_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    bench: Bench | None = None
    try:
        primary_port, canary_port = map(int, child.stdout.readline().split())
        bench = Bench({PRIMARY: primary_port, CANARY: canary_port})
        await bench.start()
        out: dict[str, Any] = {}
        out.update(await bench.split(args.requests))
        print(f"split: {out}", file=sys.stderr)
        out["fault_ratio"] = round(await bench.fault(args.requests // 2), 4)
        await bench.mirror(args.requests // 2)
        times = await bench.propagation(args.changes)
        out["propagation_ms_p50"] = round(statistics.median(times), 3)
        out["propagation_ms_p99"] = round(_percentile(times, 99), 3)
        out["propagation_changes"] = len(times)
        print(f"propagation: {out['propagation_ms_p50']} / {out['propagation_ms_p99']} ms", file=sys.stderr)
        out.update(await bench.overhead(primary_port, args.seconds, args.rate))
        with tempfile.TemporaryDirectory(prefix="canaryctl-bench-") as workdir:
            secured = MtlsBench(primary_port, Path(workdir))
            try:
                out.update(await secured.overhead(args.seconds, args.rate))
            finally:
                await secured.stop()
        print(
            f"mTLS overhead: {out['mtls_overhead_ms_p50']} / {out['mtls_overhead_ms_p99']} ms",
            file=sys.stderr,
        )
    finally:
        if bench:
            await bench.stop()
        # Closing stdin makes the child report canary counts and exit.
        _, shadow_requests = map(int, child.communicate(timeout=10)[0].split())
    out["mirror_ratio"] = round(shadow_requests / (args.requests // 2), 4)
    keys = ["split_target_pct", "split_observed_pct", "split_z", "mirror_ratio", "fault_ratio"]
    keys += ["propagation_ms_p50", "propagation_ms_p99", "overhead_ms_p50", "overhead_ms_p99", "rps"]
    keys += ["mtls_overhead_ms_p50", "mtls_overhead_ms_p99"]
    return {**{k: out[k] for k in keys}, **{k: v for k, v in out.items() if k not in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000, help="requests for the split measurement")
    parser.add_argument("--changes", type=int, default=100, help="routing changes for propagation")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the overhead measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s for the overhead measurement")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
