"""One tenant cannot slow another down or reach past its namespace: the operator (real kopf, the real
client) on the emulated API, with hostile metric and webhook servers on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kmock
import pytest
import pytest_asyncio

from canaryctl.api.models import API_VERSION, MAX_WEBHOOKS, Canary
from canaryctl.operator.adapters import cross_namespace_reference
from canaryctl.operator.cli import add_parser, shared_namespaces
from canaryctl_mesh.kube import KubeObjects, KubeUnreachable, api_client_for_host
from canaryctl_providers.outbound import HOOKS_PER_CANARY, MAX_ERROR_CHARS, QUERIES_PER_CANARY
from tests.kube.cluster import Kubelet
from tests.operator.conftest import MIN_INTERVAL_SECONDS, StartOperator
from tests.operator.helpers import (
    METRIC_TEMPLATE,
    NS,
    Obj,
    canary,
    event_messages,
    get_canary,
    invalid_conditions,
    setup_target,
    wait_for,
    wait_phase,
    workload,
)
from tests.providers.hostile import MIB, HostileServer, answer, drip, hang, huge, serving

# The healthy canary's rollout, and the longest it may go without a status change, while the other is
# starved. On a machine at load average ~10 its steps came every 1-8 s; with both CPUs busy (load ~15)
# the same rollout without any starved canary took 62 s with a 35 s gap. Without per-Canary limits and
# the API's own threads it does not move at all while the drip lasts (DRIP_SECONDS), far past both.
HEALTHY_STEP_GAP_SECONDS = 60.0
HEALTHY_ROLLOUT_SECONDS = 150.0
DRIP_SECONDS = 300.0
STARTUP_SECONDS = 90.0  # initialization and a first analysis, on a machine with busy CPUs


@dataclass(frozen=True)
class Sample:
    seconds: float
    phase: str
    step: int
    weight: int


async def trace(objects: KubeObjects, name: str, until: tuple[str, ...], timeout: float) -> list[Sample]:
    """Every distinct (phase, step, weight) the canary's status shows, with when it was first seen."""
    started = time.monotonic()
    seen: list[Sample] = []
    while time.monotonic() - started < timeout:
        status = (await get_canary(objects, name)).get("status") or {}
        now = Sample(
            time.monotonic() - started,
            status.get("phase", ""),
            int(status.get("currentStep", 0)),
            int(status.get("canaryWeight", 0)),
        )
        if not seen or (now.phase, now.step, now.weight) != (seen[-1].phase, seen[-1].step, seen[-1].weight):
            seen.append(now)
        if now.phase in until:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not reach {until} within {timeout}s: {seen}")


@pytest_asyncio.fixture()
async def dripping() -> AsyncIterator[HostileServer]:
    async with serving(drip(seconds=DRIP_SECONDS)) as server:
        yield server


@pytest_asyncio.fixture()
async def hanging() -> AsyncIterator[HostileServer]:
    async with serving(hang()) as server:
        yield server


@pytest_asyncio.fixture()
async def healthy_hook() -> AsyncIterator[HostileServer]:
    async with serving(answer(200, b"ok")) as server:
        yield server


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_starved_canary_does_not_delay_another(
    objects: KubeObjects,
    kubelet: Kubelet,
    start_operator: StartOperator,
    dripping: HostileServer,
    hanging: HostileServer,
    healthy_hook: HostileServer,
) -> None:
    """Canary "starved" queries a Prometheus that drips a byte a second; canary "hooked" has as many
    event hooks as a Canary may (32) that never answer (event hooks run concurrently; gates and
    rollout hooks run one at a time, so they cannot hold more than one connection). Canary "healthy"
    (with a hook of its own) must still step on its interval and promote."""
    metrics = [{"name": f"m{i}", "query": "up", "thresholdRange": {"min": 0}} for i in range(12)]
    starved = canary("starved", stepWeight=50, metrics=metrics)
    starved["spec"]["metricsServer"] = dripping.url
    hooks = [
        {"name": f"h{i}", "type": "event", "url": f"{hanging.url}/{i}", "timeout": "10m"}
        for i in range(MAX_WEBHOOKS)
    ]
    hooked = canary("hooked", stepWeight=50, webhooks=hooks)
    load = {"name": "load", "url": healthy_hook.url, "timeout": "5s"}
    for name in ("starved", "hooked", "healthy"):
        await setup_target(objects, "Deployment", name)
    await objects.apply(starved)
    await objects.apply(hooked)
    await objects.apply(canary("healthy", stepWeight=50, webhooks=[load]))
    running = await start_operator()
    for name in ("starved", "healthy"):
        await wait_phase(objects, name, "Initialized", timeout=STARTUP_SECONDS)
    await hanging.wait_open(HOOKS_PER_CANARY, timeout=STARTUP_SECONDS)  # "hooked" announced an event

    await objects.apply(workload("Deployment", "starved", image="app:v2", config="starved-config"))
    await dripping.wait_open(1, timeout=STARTUP_SECONDS)  # the starved canary is analysing
    await asyncio.sleep(2.0)  # time for all its calls to start, were they allowed
    await objects.apply(workload("Deployment", "healthy", image="app:v2", config="healthy-config"))
    seen = await trace(objects, "healthy", ("Succeeded", "Failed"), timeout=HEALTHY_ROLLOUT_SECONDS)

    progressing = [s for s in seen if s.phase == "Progressing"]
    gaps = [b.seconds - a.seconds for a, b in zip(progressing, progressing[1:] + seen[-1:], strict=True)]
    report = {
        "healthy_steps": len(progressing),
        "healthy_rollout_seconds": round(seen[-1].seconds - progressing[0].seconds, 2),
        "healthy_max_step_gap_seconds": round(max(gaps), 2),
        "interval_seconds": MIN_INTERVAL_SECONDS,
        "hanging_hooks_open_max": hanging.most_open,
        "dripping_queries_open_max": dripping.most_open,
    }
    print(json.dumps(report))
    assert seen[-1].phase == "Succeeded", seen
    assert max(gaps) < HEALTHY_STEP_GAP_SECONDS, report
    assert hanging.most_open == HOOKS_PER_CANARY and dripping.most_open <= QUERIES_PER_CANARY, report
    assert {r.path for r in healthy_hook.requests} == {"/"}
    starved_status = (await get_canary(objects, "starved"))["status"]
    assert starved_status["phase"] == "Progressing" and starved_status["canaryWeight"] == 50
    # Ends the starved calls now rather than at their deadlines, so the operator stops promptly.
    await hanging.stop()
    await dripping.stop()
    await running.stop()


@pytest.mark.asyncio
async def test_megabyte_error_bodies_are_cut_before_status_and_events(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator, emulator: kmock.KubernetesEmulator
) -> None:
    """A metrics server and a hook answering 500 with 64 MiB of text (a failing hook ends the analysis
    before the metrics are read, so each has a canary of its own)."""
    async with serving(huge(500, 64 * MIB, prefix=b"boom " * 400, content_type="text/plain")) as server:
        metric = canary(
            "metric", threshold=5, metrics=[{"name": "up", "query": "up", "thresholdRange": {"min": 1}}]
        )
        metric["spec"]["metricsServer"] = server.url
        hooked = canary("hook", threshold=5, webhooks=[{"name": "check", "url": server.url, "timeout": "5s"}])
        for manifest in (metric, hooked):
            await setup_target(objects, "Deployment", manifest["metadata"]["name"])
            await objects.apply(manifest)
        await start_operator()
        for name in ("metric", "hook"):
            await wait_phase(objects, name, "Initialized", timeout=STARTUP_SECONDS)
        for name in ("metric", "hook"):
            await objects.apply(workload("Deployment", name, image="app:v2", config=f"{name}-config"))

        async def reported(name: str, field: str) -> None:
            async def seen() -> bool:
                status = (await get_canary(objects, name)).get("status") or {}
                return any("500" in entry.get("message", "") for entry in status.get(field) or [])

            await wait_for(seen, STARTUP_SECONDS, f"the 500 in {name}'s status.{field}")

        await asyncio.gather(reported("metric", "metrics"), reported("hook", "webhooks"))
    messages = []
    for name, field in (("metric", "metrics"), ("hook", "webhooks")):
        messages += [entry["message"] for entry in (await get_canary(objects, name))["status"][field]]
        messages += [m for m in event_messages(emulator, name) if "500" in m]
    assert len(messages) >= 2
    for message in messages:
        assert len(message) < MAX_ERROR_CHARS + 300, message[:200]
    assert server.written < 16 * MIB * len(server.requests)


# --- namespace boundaries --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reference_into_a_namespace_that_is_not_shared_is_an_invalid_spec(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """A MetricTemplate or AlertProvider is used with its own namespace's Secrets: another team's must
    not be borrowed, a platform namespace's may."""
    foreign_template = canary("borrower")
    foreign_template["spec"]["analysis"]["metrics"][0]["templateRef"]["namespace"] = "default"
    foreign_provider = canary("notifier")
    foreign_provider["spec"]["analysis"]["alerts"] = [
        {"name": "team", "providerRef": {"name": "slack", "namespace": "default"}}
    ]
    own = canary("own")
    own["spec"]["analysis"]["metrics"][0]["templateRef"]["namespace"] = NS  # explicit, still its own
    platform = canary("platform-user")
    platform["spec"]["analysis"]["metrics"][0]["templateRef"]["namespace"] = "platform"
    for name in ("borrower", "notifier", "own", "platform-user"):
        await setup_target(objects, "Deployment", name)
    for namespace in ("default", "platform"):
        await objects.apply({**METRIC_TEMPLATE, "metadata": {"name": "success", "namespace": namespace}})
    for manifest in (foreign_template, foreign_provider, own, platform):
        await objects.apply(manifest)
    await start_operator(shared_namespaces=("platform",))

    async def invalid(name: str) -> str:
        return str((await invalid_conditions(objects, name))["InvalidSpec"]["message"])

    assert await invalid("borrower") == (
        "spec.analysis.metrics[0].templateRef: MetricTemplate default/success is in another namespace; "
        "only the shared namespaces (platform) may be referred to "
        "(--shared-namespace, chart controller.sharedNamespaces)"
    )
    assert (await invalid("notifier")).startswith(
        "spec.analysis.alerts[0].providerRef: AlertProvider default/slack is in another namespace"
    )
    await wait_phase(objects, "own", "Initialized")
    await wait_phase(objects, "platform-user", "Initialized")
    assert await objects.get("apps/v1", "Deployment", NS, "borrower-primary") is None


@pytest.mark.asyncio
async def test_a_regex_the_mesh_would_refuse_is_an_invalid_spec(
    objects: KubeObjects, kubelet: Kubelet, start_operator: StartOperator
) -> None:
    """RE2 refuses lookarounds; the included mesh's Envoy refuses `a{1000}` (program size 1,004 > 100):
    each Canary is InvalidSpec, with the field path, and a valid one goes on (the operator's default
    router is the included mesh)."""
    for name, regex in (("lookahead", "(?=a)"), ("huge", "a{1000}"), ("fine", "^alice$")):
        await setup_target(objects, "Deployment", name)
        await objects.apply(canary(name, iterations=2, match=[{"headers": {"x-user": {"regex": regex}}}]))
    await start_operator()
    lookahead = str((await invalid_conditions(objects, "lookahead"))["InvalidSpec"]["message"])
    assert lookahead.startswith("spec.analysis.match.0.headers.x-user.regex: "), lookahead
    assert "invalid RE2 regex: invalid perl operator" in lookahead
    huge = str((await invalid_conditions(objects, "huge"))["InvalidSpec"]["message"])
    assert huge.startswith("spec.analysis.match[0].headers.x-user.regex: regex too complex for Envoy"), huge
    await wait_phase(objects, "fine", "Initialized")


def test_cross_namespace_reference_follows_flaggers_rule_within_the_shared_namespaces() -> None:
    """An empty namespace is the Canary's own; steps, canaryAnalysis and upstreamRef are checked too."""

    def check(spec: Obj, shared: tuple[str, ...] = ()) -> str | None:
        body = canary("c") | {"spec": canary("c")["spec"] | spec}
        return cross_namespace_reference(Canary.model_validate(body), shared)

    assert check({}) is None
    step = {"analysis": {"metrics": [{"name": "m", "templateRef": {"name": "t", "namespace": "x"}}]}}
    stepped = {"analysis": {"steps": [{"setWeight": 10}, step]}}
    assert str(check(stepped)) == (
        "spec.analysis.steps[1].analysis.metrics[0].templateRef: MetricTemplate x/t is in another "
        "namespace; cross-namespace references are blocked (--no-cross-namespace-refs)"
    )
    assert check(stepped, ("x",)) is None
    assert str(check(stepped, ("y",))).startswith("spec.analysis.steps[1]")
    assert check(stepped, ("*",)) is None, "'*' is Flagger's default: any namespace"
    assert str(check({"upstreamRef": {"name": "u", "namespace": "gloo"}})).startswith("spec.upstreamRef")
    assert check({"upstreamRef": {"name": "u"}}) is None


def test_the_operator_flags() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["operator", "--no-cross-namespace-refs", "--hook-concurrency", "2"])
    assert (args.no_cross_namespace_refs, args.hook_concurrency, args.query_concurrency) == (
        True,
        2,
        QUERIES_PER_CANARY,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "--query-concurrency", "0"])
    pod = {"POD_NAMESPACE": "canaryctl-system"}
    assert shared_namespaces(args, pod) == (), "Flagger's flag: own namespace only"
    shared = parser.parse_args(["operator", "--shared-namespace", "monitoring", "--shared-namespace", "*"])
    assert shared_namespaces(shared, pod) == ("monitoring", "*", "canaryctl-system")
    assert shared_namespaces(parser.parse_args(["operator"]), {}) == ()


# --- the Kubernetes API ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_api_calls_do_not_queue_behind_the_default_executor(objects: KubeObjects) -> None:
    """The loop's default executor (what ``asyncio.to_thread`` uses) has one thread, and it is busy."""
    loop = asyncio.get_running_loop()
    busy = ThreadPoolExecutor(1)
    loop.set_default_executor(busy)
    blocked = loop.run_in_executor(None, time.sleep, 5.0)
    try:
        started = time.monotonic()
        assert await objects.get(API_VERSION, "Canary", NS, "none") is None
        assert time.monotonic() - started < 2.0
    finally:
        await blocked


@pytest.mark.asyncio
async def test_an_api_call_to_a_half_open_server_fails_within_its_timeout() -> None:
    """A server that accepts the connection and never answers (a half-open connection)."""
    async with (
        serving(hang()) as server,
        KubeObjects(api_client_for_host(server.url), request_timeout=0.5) as objects,
    ):
        started = time.monotonic()
        with pytest.raises(KubeUnreachable, match=r"GET .*/canaries/x: no answer within 0.5 s \(timed out\)"):
            await asyncio.wait_for(objects.get(API_VERSION, "Canary", NS, "x"), 30)
        assert time.monotonic() - started < 0.5 + 2.0  # one attempt: a timed-out request is not sent again
