"""A reconnect storm of sidecars asking for their workload certificates, and how late xDS answers
another sidecar meanwhile.

Three processes, so none measures another's CPU as its own delay:

- the control plane: `AdsServer` with `WorkloadCertificates` as meshd serves them (each stream's
  identity proven by a token, every pod its own certificate; plaintext gRPC, the TLS of the xDS port
  is not what this measures), signing on its thread (`--on-loop`: on the event loop, as before);
- the storm: `--certificates` sidecars, each on its own connection as in `bench.meshd`, each
  subscribing to its two SDS secrets at once and waiting for them (a failed stream is opened again
  after Envoy's backoff: stream_retries); storm_s is from the first request to the last answer;
- this one, the probe: one more sidecar which, before and during the storm, unsubscribes from and
  subscribes again to its listener, one after the other; each subscription is answered with the
  listener, probe_ms_* is that round trip (idle: before the storm, storm: while it lasts).

loop_cpu_s_storm and signing_cpu_s_storm: the control plane's CPU seconds during the storm on its
event loop's thread and on the signing thread.

    python -m bench.meshd_certificates [--certificates 2000] [--on-loop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

import grpc

from bench.meshd import Child, channel
from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.identity import POD_NAME_EXTRA, TOKEN_AUDIENCE, TokenAuthenticator
from canaryctl_mesh.meshd import runtime
from canaryctl_mesh.meshd.pki import CertificateAuthority
from canaryctl_mesh.meshd.watch import Backoff
from canaryctl_mesh.meshd.workload import WorkloadCertificates
from tests.mesh.delta_client import DeltaClient

MODULE = "bench.meshd_certificates"
NAMESPACE = "bench"
IDLE_PROBES = 200
STORM_TIMEOUT = 600.0
MAX_RETRIES = 20
SECRETS = (config.WORKLOAD_SECRET, config.TRUST_SECRET)
P = ParamSpec("P")
T = TypeVar("T")


class Reviews:
    """Every token is a pod of its own name, with a ServiceAccount of that name."""

    async def review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        user = {"username": f"system:serviceaccount:{NAMESPACE}:{token}", "extra": {POD_NAME_EXTRA: [token]}}
        return {"authenticated": True, "audiences": [TOKEN_AUDIENCE], "user": user}


class OnTheLoop(Executor):
    """Runs each call at once on the caller's thread: signing on the event loop, as meshd did before."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        done: Future[T] = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def sidecar(connection: grpc.aio.Channel, name: str) -> DeltaClient:
    return DeltaClient(connection, f"{name}.{NAMESPACE}", (("authorization", f"Bearer {name}"),))


def cpu_seconds() -> dict[str, float]:
    """CPU time of the event loop's thread (the caller) and of the signing thread, so far."""
    signing = [
        time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        for thread in threading.enumerate()
        if thread.name.startswith("workload-certificates") and thread.ident is not None
    ]
    return {"loop_cpu_s": time.thread_time(), "signing_cpu_s": sum(signing)}


# --- the control plane ---------------------------------------------------------------------------------


async def serve(on_loop: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    ads = AdsServer("127.0.0.1", 0, authenticator=TokenAuthenticator(Reviews()))
    certificates = WorkloadCertificates(
        CertificateAuthority.create("bench mesh CA"), signer=OnTheLoop() if on_loop else None
    )
    stop = asyncio.Event()
    async with ads:
        await ads.set_snapshot(NAMESPACE, config.sidecar_resources([], config.SidecarPorts()))
        renewals = asyncio.create_task(certificates.keep_current(ads, stop))
        say({"port": ads.port})
        while await asyncio.to_thread(sys.stdin.readline):  # until the benchmark closes it
            say(cpu_seconds())
        stop.set()
        await renewals


# --- the storm -----------------------------------------------------------------------------------------


async def storm(port: int, count: int) -> None:
    names = [f"pod-{index}" for index in range(count)]
    sidecars = [sidecar(channel(port, None), name) for name in names]
    retries = 0
    await asyncio.to_thread(sys.stdin.readline)  # go
    started = time.monotonic()
    for client in sidecars:
        client.subscribe(config.SECRET_TYPE, SECRETS)

    async def served(index: int) -> None:
        """Its secrets; a stream that fails is opened again after a backoff, as Envoy does."""
        nonlocal retries
        backoff = Backoff(0.5, 5.0)  # Envoy's first delay, jittered
        for _ in range(MAX_RETRIES):
            client = sidecars[index]
            try:
                response = await client.receive(STORM_TIMEOUT)
            except grpc.aio.AioRpcError:
                retries += 1
                await client.close()
                await asyncio.sleep(backoff.next())
                sidecars[index] = sidecar(channel(port, None), names[index])
                sidecars[index].subscribe(config.SECRET_TYPE, SECRETS)
                continue
            assert response.type_url == config.SECRET_TYPE and len(response.resources) == len(SECRETS)
            client.ack(response)
            return
        raise RuntimeError(f"{names[index]} got no secrets in {MAX_RETRIES} streams")

    await asyncio.gather(*(served(index) for index in range(count)))
    say({"storm_s": round(time.monotonic() - started, 3), "stream_retries": retries})
    for client in sidecars:
        await client.close()


# --- the probe -----------------------------------------------------------------------------------------


async def probe_once(probe: DeltaClient) -> float:
    """One subscription answered: the round trip in ms."""
    probe.unsubscribe(config.LISTENER_TYPE, ["outbound"])
    started = time.monotonic()
    probe.subscribe(config.LISTENER_TYPE, ["outbound"])
    response = await probe.receive(STORM_TIMEOUT)
    probe.ack(response)
    return (time.monotonic() - started) * 1000


def summary(name: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        f"probe_ms_{name}_p50": round(statistics.median(ordered), 2),
        f"probe_ms_{name}_p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        f"probe_ms_{name}_max": round(ordered[-1], 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = Child("--serve", *(["--on-loop"] if args.on_loop else []), module=MODULE)
    storm_child: Child | None = None
    try:
        port = (await server.ask())["port"]
        probe = sidecar(channel(port, None), "probe")
        probe.subscribe(config.LISTENER_TYPE, ["outbound"])
        probe.ack(await probe.receive(30))
        idle = [await probe_once(probe) for _ in range(IDLE_PROBES)]
        before = await server.ask("cpu")
        storm_child = Child("--storm", str(port), str(args.certificates), module=MODULE)
        await asyncio.sleep(2)  # its streams set up, before the storm starts
        finished = asyncio.ensure_future(storm_child.ask("go"))
        during: list[float] = []
        deadline = time.monotonic() + STORM_TIMEOUT
        while not finished.done() and time.monotonic() < deadline:
            during.append(await probe_once(probe))
        stormed = await finished
        after = await server.ask("cpu")
        await probe.close()
    finally:
        for child in (storm_child, server):
            if child is not None:
                child.stop()
    return {
        "certificates": args.certificates,
        "signing": "event loop" if args.on_loop else "thread",
        "storm_s": stormed["storm_s"],
        "stream_retries": stormed["stream_retries"],
        "certificates_per_s": round(args.certificates / stormed["storm_s"], 1),
        "probes_during_storm": len(during),
        **{f"{name}_storm": round(after[name] - before[name], 3) for name in after},
        **summary("idle", idle),
        **summary("storm", during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=2000)
    parser.add_argument("--on-loop", action="store_true", help="sign on the event loop (the code before)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--storm", nargs=2, metavar=("PORT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        runtime.run(serve(args.on_loop))
    elif args.storm:
        runtime.run(storm(int(args.storm[0]), int(args.storm[1])))
    else:
        print(json.dumps(runtime.run(run(args))))


if __name__ == "__main__":
    main()
