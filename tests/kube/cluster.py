"""The controllers the emulator lacks, as small loopback stand-ins shared by tests and the benchmark.

``Kubelet`` plays the Deployment and DaemonSet controllers: every workload reports its desired replicas
updated and available at its current generation (a DaemonSet runs on ``nodes`` nodes unless canaryctl's
scale-to-zero nodeSelector is set), except the ones named in ``stuck``, which never get ready, and the
ones in ``slow``, whose template changes never finish rolling out: the new ReplicaSet's pods exist but
never become available while the old ones keep serving, as a real Deployment reports it with
``maxSurge: 100%``. It writes the emulator's memory directly, so it publishes no watch events and adds no
API calls to what is measured.

``PrometheusStub`` answers Prometheus's instant-query API with values the test scripts per query.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kmock
from aiohttp import web

from canaryctl.operator.workloads import SCALE_TO_ZERO
from tests.kube.emulator import StampingEmulator


def workload_status(obj: dict[str, Any], nodes: int, rolling: bool = False) -> dict[str, Any]:
    """A finished rollout's status; ``rolling``: the new pods run beside the old ones, none available."""
    spec = obj.get("spec") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 1)
    if obj.get("kind") == "DaemonSet":
        selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
        desired = 0 if SCALE_TO_ZERO in selector else nodes
        return {
            "observedGeneration": generation,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired,
            "updatedNumberScheduled": 0 if rolling else desired,
            "numberAvailable": desired,
            "numberReady": desired,
        }
    desired = int(spec.get("replicas", 1))
    return {
        "observedGeneration": generation,
        "replicas": 2 * desired if rolling else desired,
        "updatedReplicas": desired,
        "readyReplicas": desired,
        "availableReplicas": desired,
    }


@dataclass
class Kubelet:
    emulator: StampingEmulator
    nodes: int = 2
    period: float = 0.05
    stuck: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name)
    slow: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name)
    rolled_out: dict[tuple[str, str], Any] = field(default_factory=dict)  # the template last rolled out

    def sync(self) -> None:
        for key in list(self.emulator.objects):
            resource, namespace, name = key
            if resource.plural not in ("deployments", "daemonsets") or (namespace, name) in self.stuck:
                continue
            obj = self.emulator.objects[key]
            if obj.deleted:
                continue
            template = (obj.raw.get("spec") or {}).get("template")
            workload = (namespace or "", name)
            rolling = workload in self.slow and self.rolled_out.get(workload, template) != template
            if not rolling:
                self.rolled_out[workload] = template
            status = workload_status(obj.raw, self.nodes, rolling)
            if obj.raw.get("status") != status:
                self.emulator.modify(key, {"status": status})

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sync()
            await asyncio.sleep(self.period)


@contextlib.asynccontextmanager
async def running_kubelet(
    emulator: kmock.KubernetesEmulator, seconds: float = 600.0
) -> AsyncIterator[Kubelet]:
    assert isinstance(emulator, StampingEmulator), "the kubelet's writes reach watches through it"
    kubelet = Kubelet(emulator)
    task = asyncio.create_task(kubelet.run(seconds))
    try:
        yield kubelet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class PrometheusStub:
    """``values[query]`` answers that query (None: empty result, i.e. no data); others get ``default``."""

    values: dict[str, float | None] = field(default_factory=dict)
    default: float | None = 100.0
    queries: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else request.query
        query = str(form.get("query", "")).strip()
        self.queries += 1
        value = self.values.get(query, self.default) if query != "vector(1)" else 1.0
        result = [] if value is None else [{"metric": {}, "value": [time.time(), str(value)]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@contextlib.asynccontextmanager
async def running_prometheus() -> AsyncIterator[PrometheusStub]:
    stub = PrometheusStub()
    app = web.Application()
    app.router.add_route("*", "/api/v1/query", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()
