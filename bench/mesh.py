"""Mesh benchmark: split accuracy, mirror and fault ratios, ADS propagation and proxy overhead.

Everything runs on loopback: an ADS control plane, one Envoy, two upstreams in a child process (so
they do not compete with the client for the GIL). Prints progress lines, then one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from typing import Any

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.loopback import HttpConnection, fire
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
    finally:
        if bench:
            await bench.stop()
        # Closing stdin makes the child report canary counts and exit.
        _, shadow_requests = map(int, child.communicate(timeout=10)[0].split())
    out["mirror_ratio"] = round(shadow_requests / (args.requests // 2), 4)
    keys = ["split_target_pct", "split_observed_pct", "split_z", "mirror_ratio", "fault_ratio"]
    keys += ["propagation_ms_p50", "propagation_ms_p99", "overhead_ms_p50", "overhead_ms_p99", "rps"]
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
