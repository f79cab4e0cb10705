"""The operator process killed (SIGKILL, by PID) in every phase of a rollout and started again.

``canaryctl operator`` runs as a child process against kmock's emulator; the test kills it as soon as
the Canary's stored status shows the phase, checks nothing moved while it was dead, and starts a new
one. Gates (confirm-rollout, confirm-promotion) are a loopback HTTP server the test opens, so the
Waiting phases last as long as the test wants; ``stepWeightPromotion`` makes Promoting span ticks.

What must hold: the phases follow the lifecycle in order with none repeated, the stored steps follow
each other in order with none repeated (a check and the weight step it allows are one write),
failed checks survive a restart, and the promotion and the rollback land.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import kmock
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.local.prometheus import free_port
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet, PrometheusStub
from tests.kube.emulator import emulator, emulator_url, kube_api, objects  # noqa: F401
from tests.operator.conftest import kubelet, prometheus  # noqa: F401
from tests.operator.helpers import (
    NS,
    Obj,
    canary,
    collapsed,
    get_canary,
    setup_target,
    status_history,
    steps_in_order,
    steps_visited,
    wait_for,
    wait_phase,
    workload,
)
from tests.reliability.operators import OperatorProcesses, operators  # noqa: F401

pytestmark = pytest.mark.asyncio

NAME = "web"
POLL_SECONDS = 0.02  # far shorter than any phase: Initializing and Finalising last a 1 s poll
LIFECYCLE = [
    "Initializing",
    "Initialized",
    "Waiting",
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
]


@dataclass
class Gates:
    """confirm-rollout and confirm-promotion answers: 200 when open, 403 while closed."""

    open: set[str] = field(default_factory=set)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        gate = request.match_info["gate"]
        return web.Response(status=200 if gate in self.open else 403, text=gate)


@pytest_asyncio.fixture()
async def gates() -> AsyncIterator[Gates]:
    served = Gates()
    app = web.Application()
    app.router.add_post("/{gate}", served.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield served
    finally:
        await runner.cleanup()


async def status(objects: KubeObjects) -> Obj:  # noqa: F811
    return dict((await get_canary(objects, NAME)).get("status") or {})


async def kill_in(
    objects: KubeObjects,  # noqa: F811
    operators: OperatorProcesses,  # noqa: F811
    phase: str,
    when: Callable[[Obj], bool] = lambda _: True,
    timeout: float = 30.0,
) -> Obj:
    """Kill the operator as soon as the Canary is in ``phase``; returns the status it left behind."""

    async def in_phase() -> bool:
        current = await status(objects)
        return current.get("phase") == phase and when(current)

    await wait_for(in_phase, timeout, f"phase {phase}", poll=POLL_SECONDS)
    await operators.kill(operators.current)
    left = await status(objects)
    await asyncio.sleep(0.3)  # nobody is running: nothing may change
    assert await status(objects) == left
    await operators.start()
    return left


async def test_operator_killed_in_every_phase_resumes_without_repeating_or_skipping(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    prometheus: PrometheusStub,  # noqa: F811
    emulator: kmock.KubernetesEmulator,  # noqa: F811
    gates: Gates,
    operators: OperatorProcesses,  # noqa: F811
) -> None:
    manifest = canary(NAME, interval="1s", stepWeight=30, maxWeight=60, stepWeightPromotion=50)
    manifest["spec"]["analysis"]["webhooks"] = [
        {"name": "rollout-gate", "type": "confirm-rollout", "url": f"{gates.url}/rollout"},
        {"name": "promotion-gate", "type": "confirm-promotion", "url": f"{gates.url}/promotion"},
    ]
    await setup_target(objects, "Deployment", NAME)
    await operators.start()
    await objects.apply(manifest)
    killed: list[str] = []

    async def kill(phase: str, when: Callable[[Obj], bool] = lambda _: True) -> Obj:
        left = await kill_in(objects, operators, phase, when)
        killed.append(phase)
        return left

    await kill("Initializing")
    await kill("Initialized")
    await objects.apply(workload("Deployment", NAME, image="app:v2", config=f"{NAME}-config"))
    await kill("Waiting")
    gates.open.add("rollout")
    await kill("Progressing", lambda s: s.get("canaryWeight") == 30)
    await kill("Progressing", lambda s: s.get("currentStep", 0) >= 2)  # mid analysis
    await kill("WaitingPromotion")
    gates.open.add("promotion")
    await kill("Promoting")
    await kill("Finalising")
    await kill("Succeeded")

    history = status_history(emulator, NAME)
    assert collapsed([s.get("phase") for s in history if s.get("phase")]) == LIFECYCLE
    steps = steps_visited(emulator, NAME)
    assert steps_in_order(steps), f"steps visited {steps}"
    weights = collapsed([int(s.get("canaryWeight", 0)) for s in history])
    assert weights == [0, 30, 60, 10, 0], f"weights {weights}"
    primary = await objects.get("apps/v1", "Deployment", NS, f"{NAME}-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v2"

    # A failing revision: killed after its first failed check, it still rolls back at threshold 2.
    prometheus.default = 42.0
    seen = len(history)
    await objects.apply(workload("Deployment", NAME, image="app:v3", config=f"{NAME}-config"))
    await kill("Progressing", lambda s: s.get("failedChecks") == 1)
    await kill("Failed")

    failing = status_history(emulator, NAME)[seen:]
    checks = [int(s.get("failedChecks", 0)) for s in failing if s.get("phase") == "Progressing"]
    assert checks == sorted(checks) and checks[-1] == 1, f"failed checks went {collapsed(checks)}"
    final = await status(objects)
    assert final["phase"] == "Failed" and final["failedChecks"] == 2 and final["canaryWeight"] == 0
    target = await objects.get("apps/v1", "Deployment", NS, NAME)
    assert target is not None and target["spec"]["replicas"] == 0
    primary = await objects.get("apps/v1", "Deployment", NS, f"{NAME}-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v2"
    assert set(LIFECYCLE) | {"Failed"} == set(killed), f"killed in {sorted(set(killed))}"
    assert operators.started == len(killed) + 1


PEERING_LIFETIME_SECONDS = 3


async def ticks(metrics_port: int) -> float:
    """Ticks an operator process has run, from its own /metrics (analysis duration histogram count)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "canaryctl_canary_duration_seconds_count"
    )


async def test_a_standby_takes_over_from_a_killed_leader(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    emulator: kmock.KubernetesEmulator,  # noqa: F811
    operators: OperatorProcesses,  # noqa: F811
) -> None:
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "canaryctl"}}
    emulator.objects["kopf.dev/v1/clusterkopfpeerings", None, "canaryctl"] = peering
    leader_port, standby_port = free_port(), free_port()

    def peered(priority: int, metrics_port: int) -> list[str]:
        options = ["--peering", "canaryctl", "--priority", str(priority)]
        options += ["--peering-lifetime", str(PEERING_LIFETIME_SECONDS), "--metrics-port", str(metrics_port)]
        return [*options, "--min-interval-seconds", "0.3"]

    leader = await operators.start(*peered(100, leader_port))

    def registered(priority: int) -> Callable[[], Awaitable[bool]]:
        async def in_peering() -> bool:
            peering = emulator.objects["kopf.dev/v1/clusterkopfpeerings", None, "canaryctl"].raw
            peers = (peering.get("status") or {}).values()
            return any(isinstance(peer, dict) and peer.get("priority") == priority for peer in peers)

        return in_peering

    # A replica that starts before any peer is known acts until it sees one: start the standby once
    # the leader's record is in the peering object, as a rolling second replica would.
    await wait_for(registered(100), timeout=30, what="the leader's peering record")
    await operators.start(*peered(10, standby_port))
    # On a loaded machine a process takes seconds to import and serve /metrics: the standby's own
    # record says it is up (its /metrics serves before it peers) and saw the leader, so its zero
    # ticks below mean it stood by, not that it had not started yet.
    await wait_for(registered(10), timeout=60, what="the standby's peering record")
    await setup_target(objects, "Deployment", NAME)
    await objects.apply(canary(NAME, interval="1s", stepWeight=10, maxWeight=50))

    async def at_step_3() -> bool:
        current = await status(objects)
        return current.get("phase") == "Progressing" and int(current.get("currentStep", 0)) >= 3

    await wait_phase(objects, NAME, "Initialized", timeout=30)
    await objects.apply(workload("Deployment", NAME, image="app:v2", config=f"{NAME}-config"))
    await wait_for(at_step_3, timeout=30, what="step 3")
    assert await ticks(leader_port) > 0
    assert await ticks(standby_port) == 0, "the standby acted while the leader was alive"

    await operators.kill(leader)
    killed = time.monotonic()
    left = await status(objects)

    async def moved() -> bool:
        return await status(objects) != left

    await wait_for(moved, timeout=PEERING_LIFETIME_SECONDS + 30, what="the standby to take over")
    takeover = time.monotonic() - killed
    await wait_phase(objects, NAME, "Succeeded", timeout=60)
    assert await ticks(standby_port) > 0
    steps = steps_visited(emulator, NAME)
    assert steps_in_order(steps), f"steps visited {steps}"
    weights = collapsed([int(s.get("canaryWeight", 0)) for s in status_history(emulator, NAME)])
    assert weights == [0, 10, 20, 30, 40, 50, 0]
    print(f"standby took over {takeover:.1f}s after the leader was killed")
    assert takeover < PEERING_LIFETIME_SECONDS + 10
