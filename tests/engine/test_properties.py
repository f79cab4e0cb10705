"""Properties of the engine over generated rollouts and generated observations."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Canary, CanaryStatus, Phase
from canaryctl.engine import Need, reconcile
from canaryctl.engine.types import (
    Decision,
    ErrorSample,
    MetricObservation,
    MetricSample,
    SetRoutes,
    Workload,
    WorkloadOp,
)
from tests.engine.driver import Driver, make_canary

HOOK_TYPES = [
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "rollback",
]

step_documents = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.builds(lambda d: {"pause": {"duration": f"{d}s"}}, st.integers(1, 40)),
    st.builds(lambda i: {"analysis": {"iterations": i}}, st.integers(1, 3)),
    st.builds(
        lambda p, d: {"mirror": {"percentage": p, "duration": f"{d}s"}},
        st.integers(0, 100),
        st.integers(5, 30),
    ),
    st.builds(lambda p: {"mirror": {"percentage": p}}, st.integers(0, 100)),
    st.builds(
        lambda p, d: {"fault": {"abort": {"httpStatus": 503, "percentage": p}, "duration": f"{d}s"}},
        st.integers(1, 100),
        st.integers(5, 30),
    ),
    st.just({"headerRoute": {"match": [{"headers": {"x-canary": {"exact": "1"}}}]}}),
)


@st.composite
def analyses(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["canary", "weights", "ab", "bluegreen", "mirror", "steps"]))
    base: dict[str, Any] = {
        "threshold": draw(st.integers(1, 3)),
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
        "webhooks": [
            {"name": f"h-{t}", "type": t, "url": "http://hooks.test/"}
            for t in draw(st.lists(st.sampled_from(HOOK_TYPES), unique=True, max_size=3))
        ],
    }
    if draw(st.booleans()):
        base["fastFail"] = {"period": "5s", "maxErrorRate": 20, "minRequests": 10}
    if kind == "canary":
        base |= {"stepWeight": draw(st.integers(1, 60)), "maxWeight": draw(st.integers(1, 100))}
    elif kind == "weights":
        base["stepWeights"] = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=5)))
    elif kind == "ab":
        base |= {"iterations": draw(st.integers(1, 4)), "match": [{"headers": {"x": {"exact": "1"}}}]}
    elif kind == "bluegreen":
        base["iterations"] = draw(st.integers(1, 4))
    elif kind == "mirror":
        base |= {
            "iterations": draw(st.integers(1, 3)),
            "mirror": True,
            "mirrorWeight": draw(st.integers(1, 100)),
        }
    else:
        base["steps"] = draw(st.lists(step_documents, min_size=1, max_size=6))
    return base


tick_inputs = st.fixed_dictionaries(
    {
        "metric": st.sampled_from([100.0, 100.0, 100.0, 50.0, None]),
        "hooks_ok": st.booleans(),
        "canary_ready": st.sampled_from([True, True, True, False]),
        "errors": st.sampled_from([0, 0, 1, 8]),
        "command": st.sampled_from([None] * 12 + list(CommandKind)),
        "new_revision": st.sampled_from([False] * 15 + [True]),
        "wait": st.sampled_from([None, None, 1.0, 7.0, 30.0]),
    }
)


def apply_inputs(driver: Driver, inputs: dict[str, Any], revisions: list[str]) -> None:
    value = inputs["metric"]
    driver.metrics["request-success-rate"] = lambda name: MetricObservation(name, MetricSample(value))
    for kind in HOOK_TYPES:
        driver.hooks[f"h-{kind}"] = inputs["hooks_ok"] if kind != "rollback" else not inputs["hooks_ok"]
    driver.canary_ready = inputs["canary_ready"]
    driver.error_sample = ErrorSample(requests=20, errors=inputs["errors"])
    if inputs["command"] is not None:
        driver.send(inputs["command"])
    if inputs["new_revision"]:
        revisions.append(f"rev-{len(revisions) + 2}")
        driver.new_revision(revisions[-1])


def started(analysis: dict[str, Any]) -> Driver:
    driver = Driver(make_canary(analysis, progressDeadlineSeconds=300))
    driver.run(until=lambda s: s.phase is Phase.INITIALIZED)
    driver.new_revision("rev-2")
    return driver


@settings(max_examples=80, deadline=None)
@given(analyses(), st.lists(tick_inputs, min_size=5, max_size=40))
def test_routing_invariants_hold_on_every_tick(analysis: dict[str, Any], ticks: list[dict[str, Any]]) -> None:
    driver = started(analysis)
    threshold = driver.canary.spec.effective_analysis.failure_threshold
    revisions: list[str] = []
    for inputs in ticks:
        apply_inputs(driver, inputs, revisions)
        before = driver.status
        retried = driver.command is not None and driver.command.kind is CommandKind.RETRY
        decision = driver.tick()
        after = decision.status
        for action in decision.actions:
            if isinstance(action, SetRoutes):
                routes = action.routes
                assert 0 <= routes.canary_weight <= 100
                assert routes.primary_weight + routes.canary_weight == 100
                assert 0 <= routes.mirror_weight <= 100
            if isinstance(action, Workload) and action.op is WorkloadOp.PROMOTE:
                assert after.failed_checks < threshold
        same_revision = after.last_applied_spec == before.last_applied_spec
        if same_revision and after.failed_checks > before.failed_checks:
            assert after.canary_weight <= before.canary_weight, "weight rose on a failed check"
        if before.phase is Phase.FAILED and driver.revision == before.last_applied_spec and not retried:
            assert after.canary_weight == 0 and after.phase is Phase.FAILED
        driver.advance(inputs["wait"] if inputs["wait"] is not None else max(decision.requeue_after, 0.5))


@settings(max_examples=40, deadline=None)
@given(analyses(), st.lists(st.sampled_from([0.5, 5.0, 30.0, 120.0]), min_size=5, max_size=40))
def test_nothing_is_promoted_on_missing_data_under_hold(analysis: dict[str, Any], waits: list[float]) -> None:
    analysis = {**analysis, "webhooks": []}
    driver = started(analysis)
    has_checks = any(step_needs_metrics(s) for s in analysis.get("steps", [{"analysis": {}}]))
    driver.metrics["request-success-rate"] = lambda name: MetricObservation(name, MetricSample(None))
    for wait in waits:
        decision = driver.tick()
        if has_checks:
            assert not any(isinstance(a, Workload) and a.op is WorkloadOp.PROMOTE for a in decision.actions)
        driver.advance(wait)


def step_needs_metrics(step: dict[str, Any]) -> bool:
    return "analysis" in step or "fault" in step or ("mirror" in step and "duration" in step["mirror"])


def roundtrip(canary: Canary) -> Canary:
    """What a restarted controller reads back: the object as stored in the API server."""
    wire = canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    return Canary.model_validate(wire)


def decide(canary: Canary, driver: Driver) -> Decision:
    obs = driver.observations()
    for _ in range(10):
        result = reconcile(canary, obs)
        if not isinstance(result, Need):
            return result
        obs = driver.gather(obs, result)
    raise AssertionError("engine kept asking for data")


@settings(max_examples=60, deadline=None)
@given(analyses(), st.lists(tick_inputs, min_size=3, max_size=30))
def test_a_restarted_engine_reading_its_stored_status_decides_the_same(
    analysis: dict[str, Any], ticks: list[dict[str, Any]]
) -> None:
    driver = started(analysis)
    revisions: list[str] = []
    for inputs in ticks:
        apply_inputs(driver, inputs, revisions)
        restarted = decide(roundtrip(driver.canary), driver)
        live = driver.tick()
        assert restarted.actions == live.actions
        assert restarted.requeue_after == live.requeue_after
        assert (
            restarted.status.model_dump()
            == CanaryStatus.model_validate(live.status.model_dump()).model_dump()
        )
        driver.advance(inputs["wait"] if inputs["wait"] is not None else max(live.requeue_after, 0.5))
