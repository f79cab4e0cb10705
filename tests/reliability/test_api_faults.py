"""The operator against a misbehaving API server: conflicts, lost answers, throttling, errors, cut and
expired watches, an outage and a forbidden namespace (see ``tests.kube.faults``).

Each rollout must still store its steps in order with none repeated, raise the weight one step at a
time with none skipped, end Succeeded, and never lose a status;
a Canary the operator may not act on says so in its own status while the others progress.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator

import kmock
import pytest
import pytest_asyncio

from canaryctl.api.models import API_VERSION
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet
from tests.kube.emulator import StampingEmulator, emulator, kube_api, objects  # noqa: F401
from tests.kube.faults import ApiFaults, fault_proxy
from tests.operator.conftest import (  # noqa: F401
    RunningOperator,
    StartOperator,
    kubelet,
    prometheus,
    start_operator,
)
from tests.operator.helpers import (
    METRIC_TEMPLATE,
    NS,
    Obj,
    canary,
    collapsed,
    config_map,
    event_messages,
    steps_in_order,
    steps_visited,
    wait_for,
    workload,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

LIFECYCLE = ["Initializing", "Initialized", "Progressing", "Promoting", "Finalising", "Succeeded"]
OTHER_NS = "default"  # the emulator's second namespace
STEP, TOP = 20, 60


@pytest_asyncio.fixture()
async def faults(emulator: StampingEmulator) -> AsyncIterator[ApiFaults]:  # noqa: F811
    async with fault_proxy(emulator) as proxy:
        yield proxy


def in_namespace(manifest: Obj, namespace: str) -> Obj:
    moved = copy.deepcopy(manifest)
    moved["metadata"]["namespace"] = namespace
    return moved


async def deploy(objects: KubeObjects, name: str, namespace: str = NS, interval: str = "1s") -> None:  # noqa: F811
    """A target at v1 with its Canary."""
    await objects.apply(in_namespace(METRIC_TEMPLATE, namespace))
    await objects.apply(in_namespace(config_map(f"{name}-config", "blue"), namespace))
    await objects.apply(in_namespace(workload("Deployment", name, config=f"{name}-config"), namespace))
    manifest = canary(name, interval=interval, stepWeight=STEP, maxWeight=TOP)
    await objects.apply(in_namespace(manifest, namespace))


async def release(objects: KubeObjects, name: str, namespace: str = NS) -> None:  # noqa: F811
    """v2 of the target: a new revision to roll out."""
    manifest = workload("Deployment", name, image="app:v2", config=f"{name}-config")
    await objects.apply(in_namespace(manifest, namespace))


async def status(objects: KubeObjects, name: str, namespace: str = NS) -> Obj:  # noqa: F811
    found = await objects.get(API_VERSION, "Canary", namespace, name)
    return dict((found or {}).get("status") or {})


async def wait_all(
    objects: KubeObjects,  # noqa: F811
    names: tuple[str, ...],
    phase: str,
    timeout: float,
    namespace: str = NS,
) -> None:
    async def reached() -> bool:
        return all([(await status(objects, name, namespace)).get("phase") == phase for name in names])

    await wait_for(reached, timeout, f"{names} {phase}", poll=0.2)


def assert_clean_rollout(emulator: kmock.KubernetesEmulator, name: str, namespace: str = NS) -> None:  # noqa: F811
    """Every phase once and the stored steps in order, none repeated; the weights rose by one step at a
    time, none skipped."""
    versions = emulator.objects[f"{API_VERSION}/canaries", namespace, name].history
    history = [dict(v.get("status") or {}) for v in versions if v is not None]
    phases = collapsed([s["phase"] for s in history if s.get("phase")])
    assert phases == LIFECYCLE, f"{name}: phases {phases}"
    if namespace == NS:
        steps = steps_visited(emulator, name)
        assert steps_in_order(steps), f"{name}: steps {steps}"
    weights = collapsed([int(s.get("canaryWeight", 0)) for s in history if s.get("phase") == "Progressing"])
    weights = weights[1:] if weights[:1] == [0] else weights  # Progressing is stored before the first step
    assert weights == list(range(STEP, TOP + 1, STEP)), f"{name}: weights while progressing {weights}"


def alive(running: RunningOperator) -> None:
    assert running.thread.is_alive(), "the operator crashed"


async def test_conflicts_lost_answers_throttling_errors_and_expired_watches_neither_repeat_nor_lose_a_step(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    emulator: StampingEmulator,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
) -> None:
    names = ("alpha", "beta", "gamma")
    for name in names:
        await deploy(objects, name)
    running = await start_operator(server=faults.url)
    await wait_all(objects, names, "Initialized", 30)
    for name in names:
        await release(objects, name)

    async def progressing() -> bool:
        return any([(await status(objects, name)).get("phase") == "Progressing" for name in names])

    await wait_for(progressing, 30, "a rollout under way", poll=0.1)
    faults.conflicts, faults.lost_answers = 4, 3
    faults.throttled, faults.errors = 6, 6
    assert faults.cut_watches() > 0
    await asyncio.sleep(1)
    assert faults.expire_watches() > 0
    await wait_all(objects, names, "Succeeded", 90)

    alive(running)
    for code in (409, 504, 429, 500, 410):
        assert faults.served.get(code), f"no {code} was answered: {faults.served}"
    for name in names:
        assert_clean_rollout(emulator, name)


async def test_a_forbidden_namespace_is_reported_on_its_canaries_while_the_others_progress(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    emulator: StampingEmulator,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
) -> None:
    faults.forbidden.add(OTHER_NS)
    await deploy(objects, "blocked", OTHER_NS)
    await deploy(objects, "free")
    running = await start_operator(server=faults.url)

    async def reported() -> bool:
        conditions = (await status(objects, "blocked", OTHER_NS)).get("conditions") or []
        return any(c["type"] == "ReconcileError" and c["status"] == "True" for c in conditions)

    await wait_for(reported, 30, "the forbidden Canary's ReconcileError condition")
    conditions = {c["type"]: c for c in (await status(objects, "blocked", OTHER_NS))["conditions"]}
    assert conditions["ReconcileError"]["reason"] == "Forbidden"
    assert OTHER_NS in conditions["ReconcileError"]["message"]

    await wait_all(objects, ("free",), "Initialized", 30)
    await release(objects, "free")
    await wait_all(objects, ("free",), "Succeeded", 60)
    assert_clean_rollout(emulator, "free")
    assert (await status(objects, "blocked", OTHER_NS)).get("phase") in (None, "Initializing")

    faults.forbidden.clear()  # the RoleBinding is back: the blocked Canary catches up on its own
    await wait_all(objects, ("blocked",), "Initialized", 30, OTHER_NS)
    conditions = (await status(objects, "blocked", OTHER_NS))["conditions"]
    assert "ReconcileError" not in {c["type"] for c in conditions}
    alive(running)


@pytest.mark.parametrize("seconds", [8, pytest.param(60, marks=pytest.mark.long, id="a-minute")])
async def test_after_an_api_outage_every_canary_resumes_within_one_interval(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    emulator: StampingEmulator,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
    seconds: float,
) -> None:
    """Three rollouts with a ``seconds`` outage in the middle: after it, each Canary's status is written
    again within one analysis interval, and every rollout completes without a repeated step."""
    names, interval = ("one", "two", "three"), 2.0
    for name in names:
        await deploy(objects, name, interval=f"{interval:g}s")
    running = await start_operator(server=faults.url)
    await wait_all(objects, names, "Initialized", 30)
    for name in names:
        await release(objects, name)

    async def stepped() -> bool:
        return all([(await status(objects, name)).get("canaryWeight", 0) >= STEP for name in names])

    await wait_for(stepped, 30, "every rollout at its first step", poll=0.1)
    faults.down = True
    await asyncio.sleep(0.5)
    before = {name: await status(objects, name) for name in names}
    await asyncio.sleep(seconds)
    assert {name: await status(objects, name) for name in names} == before, "written during the outage"
    faults.down = False
    back = time.monotonic()

    def resumed() -> dict[str, float]:
        first: dict[str, float] = {}
        for at, _, name, code in faults.status_writes:
            if at > back and 200 <= code < 300:
                first.setdefault(name, at - back)
        return first

    async def all_resumed() -> bool:
        return len(resumed()) == len(names)

    await wait_for(all_resumed, 4 * interval, "every Canary written after the outage")
    late = {name: delay for name, delay in resumed().items() if delay > interval}
    assert not late, f"resumed later than one interval ({interval}s) after the outage: {late}"
    await wait_all(objects, names, "Succeeded", 60)
    alive(running)
    assert faults.served.get(503)
    for name in names:
        assert_clean_rollout(emulator, name)


@pytest.mark.parametrize(
    ("held", "overrides"),
    [(1.5, {}), (6.0, {"daemon_stop_seconds": 0.3})],
    ids=["within-kopfs-wait", "after-kopf-gave-up"],
)
async def test_an_operator_stopped_while_a_step_waits_on_the_api_finishes_it_and_the_next_one_goes_on(
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    emulator: StampingEmulator,  # noqa: F811
    faults: ApiFaults,
    start_operator: StartOperator,  # noqa: F811
    held: float,
    overrides: dict[str, float],
) -> None:
    """A restart or a failover while a tick has acted but not yet stored its status: the tick ends
    before the operator does, so its successor neither repeats the step nor posts its Event twice.
    That holds too when the tick outlasts kopf's wait for its cancelled daemon (kopf then leaves it
    running): the operator closes its API threads only after the tick has stored its status."""
    await deploy(objects, "halt")
    first = await start_operator(server=faults.url, **overrides)
    await wait_all(objects, ("halt",), "Initialized", 30)
    await release(objects, "halt")

    async def stepped() -> bool:
        return int((await status(objects, "halt")).get("canaryWeight", 0)) >= STEP

    await wait_for(stepped, 30, "the first step", poll=0.1)
    faults.slow_events = held

    async def event_in_flight() -> bool:
        return faults.events_in_flight > 0

    await wait_for(event_in_flight, 30, "an Event write under way", poll=0.02)
    await first.stop()
    await asyncio.sleep(held)  # anything the stopped operator left running would write by now
    advanced = [m for m in event_messages(emulator, "halt") if m.startswith("Advance")]
    stored = int((await status(objects, "halt")).get("canaryWeight", 0))
    assert len(advanced) == stored // STEP, f"steps announced {advanced}, weight stored {stored}"
    faults.slow_events = 0.0
    await start_operator(server=faults.url)
    await wait_all(objects, ("halt",), "Succeeded", 60)
    assert_clean_rollout(emulator, "halt")
    advances = [m for m in event_messages(emulator, "halt") if m.startswith("Advance")]
    assert len(advances) == len(set(advances)) == TOP // STEP, advances
