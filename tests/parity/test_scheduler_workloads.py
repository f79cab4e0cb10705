"""Flagger's scheduler tests for Deployment and DaemonSet targets, against canaryctl.

Mirrors ``pkg/controller/scheduler_deployment_test.go`` and ``scheduler_daemonset_test.go`` of
fluxcd/flagger: each case's id is the Flagger test it mirrors. A DaemonSet case starts with its primary
ready, because Flagger's fake DaemonSets count as ready with an empty status (those tests never call
``makePrimaryReady``); here one node runs them. Where canaryctl deliberately differs the test
asserts canaryctl's behaviour and says how Flagger's differs (docs/flagger.md lists them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from canaryctl.api.models import Phase
from canaryctl.operator.workloads import SCALE_TO_ZERO
from tests.parity.conftest import NewScheduler
from tests.parity.scheduler import (
    CONFIG_MAP_V2,
    FAILING_METRIC,
    HPA,
    METRICS,
    SECRET_V2,
    Obj,
    Routes,
    Scheduler,
    ab_canary,
    canary,
    secret,
    secret_value,
    serving,
    workload,
)

pytestmark = pytest.mark.asyncio
V2_IMAGE = "quay.io/stefanprodan/podinfo:1.2.1"


def flagger(*names: str) -> list[Any]:
    """Parametrize by target kind; the ids are the Flagger tests each case mirrors."""
    return [
        pytest.param(kind, id=name) for kind, name in zip(("Deployment", "DaemonSet"), names, strict=True)
    ]


async def created(fixture: NewScheduler, kind: str, manifest: Obj | None = None) -> Scheduler:
    """newDeploymentFixture / newDaemonSetFixture: the target (and the HPA for a Deployment), the Canary."""
    scheduler = await fixture(
        workload(kind), *([HPA] if kind == "Deployment" else []), manifest or canary(kind)
    )
    if kind == "DaemonSet":
        scheduler.make_primary_ready()
    return scheduler


async def initialize(scheduler: Scheduler) -> Scheduler:
    """``advanceCanary`` until Initialized, the primary made ready in between as the Flagger tests do."""
    await scheduler.advance()
    scheduler.make_primary_ready()
    await scheduler.advance()
    assert await scheduler.phase() is Phase.INITIALIZED
    return scheduler


async def started(fixture: NewScheduler, kind: str, manifest: Obj | None = None) -> Scheduler:
    return await initialize(await created(fixture, kind, manifest))


async def new_revision(scheduler: Scheduler, kind: str) -> None:
    """Update the target to podinfo 1.2.1, detect it, and make the scaled-up canary ready."""
    await scheduler.apply(workload(kind, "1.2.1"))
    await scheduler.advance()
    assert await scheduler.phase() is Phase.PROGRESSING
    scheduler.make_canary_ready()


async def target(scheduler: Scheduler, kind: str, name: str = "podinfo") -> Obj:
    return await scheduler.get("apps/v1", kind, name)


def scaled_to_zero(obj: Obj) -> bool:
    """replicas 0, or for a DaemonSet the nodeSelector no node has (Flagger's key is
    ``flagger.app/scale-to-zero``; canaryctl's is ``canaryctl.dev/scale-to-zero``)."""
    if obj["kind"] == "DaemonSet":
        return SCALE_TO_ZERO in (obj["spec"]["template"]["spec"].get("nodeSelector") or {})
    return bool(obj["spec"]["replicas"] == 0)


async def advance_until(scheduler: Scheduler, phase: Phase, intervals: int = 15) -> None:
    for _ in range(intervals):
        if await scheduler.phase() is phase:
            return
        await scheduler.advance()
    assert await scheduler.phase() is phase


@pytest.mark.parametrize("kind", flagger("TestScheduler_DeploymentInit", "TestScheduler_DaemonSetInit"))
async def test_init_creates_the_primary(fixture: NewScheduler, kind: str) -> None:
    scheduler = await created(fixture, kind)
    await scheduler.advance()
    primary = await target(scheduler, kind, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith("podinfo:1.2.0")


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentNewRevision", "TestScheduler_DaemonSetNewRevision")
)
async def test_new_revision_scales_the_canary_up(fixture: NewScheduler, kind: str) -> None:
    scheduler = await started(fixture, kind)
    assert scaled_to_zero(await target(scheduler, kind))
    await scheduler.apply(workload(kind, "1.2.1"))
    await scheduler.advance()
    scaled_up = await target(scheduler, kind)
    assert not scaled_to_zero(scaled_up)
    if kind == "Deployment":
        assert scaled_up["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentRollback", "TestScheduler_DaemonSetRollback")
)
async def test_failed_checks_at_the_threshold_roll_back(fixture: NewScheduler, kind: str) -> None:
    """Flagger sets ``failedChecks: 10`` on an Initialized canary whose target has zero replicas, which its
    fake client counts as ready. canaryctl analyses only a canary that serves (a scaled-to-zero target is
    not ready), so the same status is set on a real rollout of a new revision."""
    scheduler = await started(fixture, kind)
    await new_revision(scheduler, kind)
    await scheduler.sync_status(phase="Progressing", failedChecks=10)
    await scheduler.edit_analysis(metrics=[*METRICS, FAILING_METRIC])
    await scheduler.advance()
    await scheduler.advance()
    assert await scheduler.phase() is Phase.FAILED
    assert (await scheduler.routes()).canary == 0
    assert scaled_to_zero(await target(scheduler, kind))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "promoted_phase", "routed"),
    [
        pytest.param(
            "Deployment", Phase.PROMOTING, 50, id="TestScheduler_DeploymentPromotionPrimaryNotReady"
        ),
        pytest.param(
            "Deployment", Phase.FINALISING, 0, id="TestScheduler_DeploymentPromotionFailedAfterTrafficShift"
        ),
    ],
)
async def test_a_primary_failing_during_promotion_keeps_the_canary(
    fixture: NewScheduler, kind: str, promoted_phase: Phase, routed: int
) -> None:
    """Flagger gives up at once, when the Deployment controller reports ProgressDeadlineExceeded;
    canaryctl waits ``progressDeadlineSeconds`` from the first time it sees the primary not ready (its
    own deadline, as for every wait), then acts the same."""
    scheduler = await started(fixture, kind)
    await new_revision(scheduler, kind)
    replicas = (await target(scheduler, kind))["spec"]["replicas"]
    assert replicas > 0
    await scheduler.sync_status(phase=promoted_phase.value)
    await scheduler.set_routes(routed)
    scheduler.make_primary_not_ready()
    await scheduler.advance()
    assert await scheduler.phase() is promoted_phase, "within the deadline: wait for the primary"
    assert (await scheduler.routes()).canary == routed
    await advance_until(scheduler, Phase.FAILED)
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary) == (0, 100), "all traffic on the healthy canary"
    assert (await target(scheduler, kind))["spec"]["replicas"] == replicas, "the canary is not scaled down"
    assert (await scheduler.status()).canary_weight == 100


async def test_a_primary_not_ready_halts_the_analysis_until_it_recovers(fixture: NewScheduler) -> None:
    """advanceCanary (scheduler.go) checks IsPrimaryReady on every tick of an analysis, before the canary:
    a primary that stops serving halts the steps; once it serves again the steps go on."""
    scheduler = await started(fixture, "Deployment")
    await new_revision(scheduler, "Deployment")
    await scheduler.advance()
    weight = (await scheduler.routes()).canary
    assert weight > 0
    scheduler.make_primary_not_ready()
    for _ in range(3):
        await scheduler.advance()
    status = await scheduler.status()
    assert (status.phase, status.canary_weight, (await scheduler.routes()).canary) == (
        Phase.PROGRESSING,
        weight,
        weight,
    )
    assert "podinfo-primary: 0 of 1 replicas available" in status.message, status.message
    scheduler.make_primary_ready()
    await scheduler.advance()
    assert (await scheduler.routes()).canary > weight


async def test_a_primary_not_ready_past_the_deadline_rolls_back(fixture: NewScheduler) -> None:
    """Flagger rolls back once the primary's progress deadline is exceeded (IsPrimaryReady not
    retriable); canaryctl once ``progressDeadlineSeconds`` has passed since it first saw the primary
    not ready."""
    manifest = canary()
    manifest["spec"]["progressDeadlineSeconds"] = 180
    scheduler = await started(fixture, "Deployment", manifest)
    await new_revision(scheduler, "Deployment")
    await scheduler.advance()
    assert (await scheduler.routes()).canary > 0
    scheduler.make_primary_not_ready()
    await scheduler.advance()
    assert await scheduler.phase() is Phase.PROGRESSING, "within the deadline: wait for the primary"
    await advance_until(scheduler, Phase.FAILED, intervals=5)
    assert (await scheduler.routes()).canary == 0
    assert any("Progress deadline exceeded (180s): primary of" in m for m in scheduler.event_messages())


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentSkipAnalysis", "TestScheduler_DaemonSetSkipAnalysis")
)
async def test_skip_analysis_promotes(fixture: NewScheduler, kind: str) -> None:
    """Flagger promotes and succeeds in the tick after the canary is ready; canaryctl passes through
    Promoting and Finalising and waits for the promoted primary to be ready (seconds, within the same
    interval) before it scales the canary down."""
    scheduler = await started(fixture, kind)
    await scheduler.edit_spec(skipAnalysis=True)
    await new_revision(scheduler, kind)
    await scheduler.advance()
    status = await scheduler.status()
    assert status.phase is Phase.SUCCEEDED
    assert (await scheduler.canary_body())["spec"]["skipAnalysis"] is True
    assert scheduler.phases()[-4:] == [Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED]
    assert max(s.canary_weight for s in scheduler.history) == 0


async def test_analysis_phases_with_step_weight_promotion(fixture: NewScheduler) -> None:
    """TestScheduler_DeploymentAnalysisPhases: stepWeight 100, stepWeightPromotion 50, no metrics. Flagger
    shows Finalising for a whole interval; canaryctl finalises one second after routing all traffic to
    the primary, so that interval ends Succeeded."""
    manifest = canary(interval="1m", stepWeight=100, stepWeightPromotion=50)
    del manifest["spec"]["analysis"]["maxWeight"], manifest["spec"]["analysis"]["metrics"]
    scheduler = await started(fixture, "Deployment", manifest)
    seen = []
    await scheduler.apply(workload("Deployment", "1.2.1"))
    await scheduler.advance()
    scheduler.make_canary_ready()
    seen.append(await scheduler.status())
    for _ in range(4):
        await scheduler.advance()
        seen.append(await scheduler.status())
    assert [(s.phase, s.canary_weight) for s in seen] == [
        (Phase.PROGRESSING, 0),
        (Phase.PROGRESSING, 100),
        (Phase.PROMOTING, 100),
        (Phase.PROMOTING, 50),
        (Phase.SUCCEEDED, 0),  # Flagger: Finalising 0, then Succeeded 0 one interval later
    ]
    assert scheduler.phases()[-2:] == [Phase.FINALISING, Phase.SUCCEEDED]


async def test_blue_green_analysis_phases(fixture: NewScheduler) -> None:
    """TestScheduler_DeploymentBlueGreenAnalysisPhases: one iteration. Flagger spends its first interval on
    pre-rollout hooks and counting the iteration, then checks once more after the switch, then promotes,
    finalises and succeeds an interval apart. canaryctl runs the iteration's check one interval after
    the revision is detected, switches, checks once more, and promotes through to Succeeded within
    seconds: the same checks, three intervals sooner."""
    manifest = canary(interval="1m", iterations=1)
    del manifest["spec"]["analysis"]["stepWeight"], manifest["spec"]["analysis"]["maxWeight"]
    scheduler = await started(fixture, "Deployment", manifest)
    await new_revision(scheduler, "Deployment")
    await scheduler.advance()
    status = await scheduler.status()
    assert (status.phase, status.canary_weight) == (Phase.PROGRESSING, 100)
    await scheduler.advance()
    assert await scheduler.phase() is Phase.SUCCEEDED
    assert scheduler.phases()[-4:] == [Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED]
    checks = {m.time for s in scheduler.history for m in s.metrics if m.name == "request-success-rate"}
    assert len(checks) == 2, "the iteration with the primary serving, then one with the canary serving"


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentNewRevisionReset", "TestScheduler_DaemonSetNewRevisionReset")
)
async def test_a_new_revision_mid_analysis_resets_the_routes(fixture: NewScheduler, kind: str) -> None:
    """Flagger routes all traffic back to the primary in the tick that sees the new revision, and starts
    again one interval later; canaryctl starts again as soon as the restarted canary is ready, so the
    reset shows in the routes written rather than in the routes at the end of the interval."""
    scheduler = await started(fixture, kind)
    await new_revision(scheduler, kind)
    await scheduler.advance()
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary, routes.mirrored) == (90, 10, False)
    written = len(scheduler.route_history())
    third = workload(kind, "1.2.1")
    third["spec"]["template"]["spec"]["serviceAccountName"] = "test"
    await scheduler.apply(third)
    await scheduler.advance()
    assert scheduler.route_history()[written:] == [Routes(100, 0, False), Routes(90, 10, False)]
    status = await scheduler.status()
    assert (status.current_step, status.failed_checks) == (1, 0), "the analysis starts from the first step"


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentPromotion", "TestScheduler_DaemonSetPromotion")
)
async def test_promotion_copies_the_template_and_configs(fixture: NewScheduler, kind: str) -> None:
    """Flagger reads the weight back from the router each tick, so the test's SetRoutes(60/40) moves the
    rollout; canaryctl's weight is the status, which ``set_routes`` updates with the routes. From 40%
    canaryctl checks 40% and 50% before promoting (Flagger: 50%), and finalises within the promoting
    interval."""
    scheduler = await started(fixture, kind)
    await new_revision(scheduler, kind)
    await scheduler.apply(CONFIG_MAP_V2)
    await scheduler.apply(SECRET_V2)
    await scheduler.advance()
    assert any("Restarting analysis" in m for m in scheduler.event_messages()), (
        "configs are part of the revision"
    )
    await scheduler.set_routes(40)
    await scheduler.advance()
    assert await scheduler.phase() is Phase.PROGRESSING
    await advance_until(scheduler, Phase.SUCCEEDED, intervals=4)
    assert Phase.PROMOTING in scheduler.phases() and Phase.FINALISING in scheduler.phases()
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary, routes.mirrored) == (100, 0, False)
    primary = await target(scheduler, kind, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == V2_IMAGE
    config = await scheduler.get("v1", "ConfigMap", "podinfo-config-env-primary")
    assert config["data"]["color"] == CONFIG_MAP_V2["data"]["color"]
    copied = await scheduler.get("v1", "Secret", "podinfo-secret-env-primary")
    assert secret_value(copied, "apiKey") == secret_value(SECRET_V2, "apiKey")


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentMirroring", "TestScheduler_DaemonSetMirroring")
)
async def test_mirroring_comes_before_the_first_weight(fixture: NewScheduler, kind: str) -> None:
    scheduler = await started(fixture, kind, canary(kind, mirror=True))
    await new_revision(scheduler, kind)
    await scheduler.advance()
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary, routes.mirrored) == (100, 0, True)
    await scheduler.advance()
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary, routes.mirrored) == (90, 10, False)


@pytest.mark.parametrize(
    "kind", flagger("TestScheduler_DeploymentABTesting", "TestScheduler_DaemonSetABTesting")
)
async def test_ab_testing_routes_matching_requests_then_promotes(fixture: NewScheduler, kind: str) -> None:
    scheduler = await started(fixture, kind, ab_canary(kind))
    await new_revision(scheduler, kind)
    await scheduler.advance()
    routes = await scheduler.routes()
    assert (routes.primary, routes.canary, routes.mirrored) == (0, 100, False)
    await scheduler.sync_status(iterations=10)
    await advance_until(scheduler, Phase.SUCCEEDED, intervals=3)
    assert Phase.FINALISING in scheduler.phases()
    primary = await target(scheduler, kind, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == V2_IMAGE


@pytest.mark.parametrize(
    ("kind", "service", "expected"),
    [
        pytest.param(kind, service, expected, id=f"TestScheduler_{kind}{case}")
        for kind in ("Deployment", "DaemonSet")
        for case, service, expected in (
            ("PortDiscovery", {}, ["http 9898", "http-metrics 8080", "tcp-podinfo-2 8888"]),
            (
                "TargetPortNumber",
                {"port": 80, "targetPort": 9898},
                ["http 80", "http-metrics 8080", "tcp-podinfo-2 8888"],
            ),
            # Flagger's test expects "http-metrics 8080" here too: two ports numbered 8080, which an API
            # server refuses (Service ports are unique by port and protocol). canaryctl leaves it out.
            ("TargetPortName", {"port": 8080, "targetPort": "http"}, ["http 8080", "tcp-podinfo-2 8888"]),
        )
    ],
)
async def test_port_discovery_adds_the_target_ports(
    fixture: NewScheduler, kind: str, service: Obj, expected: list[str]
) -> None:
    """Every generated Service (apex, primary, canary) carries the target's other container ports, each
    to the same container port; the container port spec.service already exposes is not repeated."""
    manifest = canary(kind)
    manifest["spec"]["service"] |= {"portDiscovery": True, **service}
    scheduler = await created(fixture, kind, manifest)
    await scheduler.advance()
    for name in ("podinfo-canary", "podinfo-primary", "podinfo"):
        ports = (await scheduler.get("v1", "Service", name))["spec"]["ports"]
        assert sorted(f"{p['name']} {p['port']}" for p in ports) == sorted(expected), name
        assert len({(p["port"], p["protocol"]) for p in ports}) == len(ports), (
            "unique, as an API server wants"
        )
        discovered = [p for p in ports if p["name"] != "http"]
        assert all(p["targetPort"] == p["port"] for p in discovered)


@pytest_asyncio.fixture()
async def slack() -> AsyncIterator[tuple[str, list[Obj]]]:
    """Flagger's httptest server standing in for Slack's incoming webhook."""
    posts: list[Obj] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", receive)
    async with serving(app) as url:
        yield f"{url}/", posts


@pytest.mark.parametrize("kind", flagger("TestScheduler_DeploymentAlerts", "TestScheduler_DaemonSetAlerts"))
async def test_alerts_reach_every_provider_with_the_canary_named(
    fixture: NewScheduler, kind: str, slack: tuple[str, list[Obj]]
) -> None:
    """Both entries name the same provider: Flagger posts once per entry, canaryctl once per provider. And
    Flagger asserts only inside its server's handler (a test that passes when nothing is sent); here the
    post must arrive."""
    url, posts = slack
    alerts = [
        {"name": "slack-dev", "severity": "info", "providerRef": {"name": "slack", "namespace": "default"}},
        {"name": "slack-prod", "severity": "info", "providerRef": {"name": "slack"}},
    ]
    scheduler = await created(fixture, kind, canary(kind, alerts=alerts))
    await scheduler.apply(secret("alert-secret", address=url))
    await initialize(scheduler)
    assert len(posts) == 1
    assert posts[0]["text"].startswith("podinfo.default: Initialization done!")
