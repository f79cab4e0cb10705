"""Scenario tables: each strategy driven tick by tick through the pure engine."""

from __future__ import annotations

import itertools

import pytest

from canaryctl.api.models import MIN_INTERVAL_CONTEXT, Canary, CanaryStatus, Phase
from canaryctl.engine.clock import from_rfc3339
from canaryctl.engine.steps import StepKind, Strategy, compile_steps, strategy
from canaryctl.engine.types import CallHooks, ErrorSample, Workload, WorkloadOp
from tests.engine.driver import Driver, make_canary, metric_value

SUCCESS = {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}


def promoted(driver: Driver) -> Driver:
    driver.metrics["request-success-rate"] = metric_value(100.0)
    driver.run(until=lambda s: s.phase is Phase.INITIALIZED)
    driver.routes.clear()
    driver.actions.clear()
    driver.new_revision("rev-2")
    return driver


def workload_ops(driver: Driver) -> list[WorkloadOp]:
    return [a.op for a in driver.actions if isinstance(a, Workload)]


@pytest.mark.parametrize(
    ("analysis", "kind", "weights"),
    [
        ({"stepWeight": 20, "maxWeight": 60}, Strategy.CANARY, [0, 20, 40, 60, 0]),
        ({"stepWeight": 30, "maxWeight": 100}, Strategy.CANARY, [0, 30, 60, 90, 100, 0]),
        ({"stepWeights": [1, 5, 25, 50]}, Strategy.CANARY, [0, 1, 5, 25, 50, 0]),
        (
            {"stepWeight": 25, "maxWeight": 50, "stepWeightPromotion": 20},
            Strategy.CANARY,
            [0, 25, 50, 30, 10, 0],
        ),
        ({"iterations": 3}, Strategy.BLUE_GREEN, [0, 100, 0]),
    ],
)
def test_weight_strategies_walk_their_weights_then_promote(
    analysis: dict[str, object], kind: Strategy, weights: list[int]
) -> None:
    driver = promoted(Driver(make_canary({**analysis, "metrics": [SUCCESS]})))
    assert strategy(driver.canary.spec.effective_analysis) is kind
    status = driver.run()
    assert status.phase is Phase.SUCCEEDED
    assert driver.weights() == weights
    assert workload_ops(driver) == [
        WorkloadOp.SCALE_CANARY_UP,
        WorkloadOp.PROMOTE,
        WorkloadOp.SCALE_CANARY_DOWN,
    ]
    assert status.last_promoted_spec == "rev-2"
    assert status.failed_checks == 0


def test_promotion_happens_only_after_every_step_was_checked_one_interval_apart() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 50, "maxWeight": 100, "metrics": [SUCCESS]})))
    driver.run()
    checks = [n for n in driver.calls if n.startswith("metric:")]
    assert len(checks) == 2
    times = sorted({from_rfc3339(m.time) for d in driver.decisions for m in d.status.metrics if m.time})
    assert len(times) == 2
    assert (times[1] - times[0]).total_seconds() >= 10


def test_ab_testing_routes_matching_requests_for_each_iteration() -> None:
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    driver = promoted(Driver(make_canary({"iterations": 4, "match": match, "metrics": [SUCCESS]})))
    assert strategy(driver.canary.spec.effective_analysis) is Strategy.AB
    driver.run()
    assert driver.status.phase is Phase.SUCCEEDED
    header_routes = [r.routes for r in driver.routes if r.routes.match]
    assert header_routes and all(r.canary_weight == 0 for r in header_routes)
    assert header_routes[0].match[0].headers is not None
    assert header_routes[0].match[0].headers["x-canary"].exact == "insider"
    assert driver.calls.count("metric:request-success-rate") == 4
    assert driver.routes[-1].routes.match == ()


def test_blue_green_mirroring_mirrors_during_iterations_then_switches() -> None:
    driver = promoted(
        Driver(make_canary({"iterations": 2, "mirror": True, "mirrorWeight": 50, "metrics": [SUCCESS]}))
    )
    driver.run()
    timeline = [(r.routes.canary_weight, r.routes.mirror_weight) for r in driver.routes]
    assert timeline == [(0, 0), (0, 50), (0, 0), (100, 0), (0, 0)]
    assert driver.status.phase is Phase.SUCCEEDED


def test_explicit_steps_drive_weight_pause_mirror_fault_and_header_route() -> None:
    steps = [
        {"setWeight": 10},
        {"pause": {"duration": "30s"}},
        {"mirror": {"percentage": 50, "duration": "20s"}},
        {"fault": {"abort": {"httpStatus": 503, "percentage": 20}, "duration": "10s"}},
        {"headerRoute": {"match": [{"headers": {"x-beta": {"exact": "1"}}}]}},
        {"analysis": {"iterations": 2}},
        {"setWeight": 50},
    ]
    driver = promoted(Driver(make_canary({"steps": steps, "metrics": [SUCCESS]})))
    assert len(compile_steps(driver.canary.spec)) == 7
    driver.run()
    assert driver.status.phase is Phase.SUCCEEDED
    timeline = [
        (r.routes.canary_weight, r.routes.mirror_weight, r.routes.fault is not None, bool(r.routes.match))
        for r in driver.routes
    ]
    assert timeline == [
        (0, 0, False, False),
        (10, 0, False, False),
        (10, 50, False, False),
        (10, 0, True, False),
        (10, 0, False, False),
        (10, 0, False, True),
        (50, 0, False, True),
        (0, 0, False, False),
    ]
    # Mirror 20s at a 10s interval = 2 checks; the fault step is judged from the caller's side.
    assert driver.calls.count("metric:request-success-rate:caller") == 1
    assert driver.calls.count("metric:request-success-rate") == 2 + 2


def test_pause_holds_for_its_duration() -> None:
    driver = promoted(Driver(make_canary({"steps": [{"setWeight": 10}, {"pause": {"duration": "45s"}}]})))
    driver.run(until=lambda s: s.current_step == 1)
    paused_at = driver.now
    driver.run(until=lambda s: s.phase is Phase.PROMOTING)
    assert (driver.now - paused_at).total_seconds() >= 45


def test_post_rollout_hooks_run_after_promotion() -> None:
    hooks = [{"name": "cleanup", "type": "post-rollout", "url": "http://hooks.test/"}]
    driver = promoted(Driver(make_canary({"stepWeight": 50, "metrics": [SUCCESS], "webhooks": hooks})))
    driver.run()
    post = [a for a in driver.actions if isinstance(a, CallHooks)]
    assert len(post) == 1 and post[0].hooks[0].name == "cleanup"


def test_skip_analysis_promotes_without_measuring() -> None:
    canary = make_canary({"stepWeight": 10, "metrics": [SUCCESS]}, skipAnalysis=True)
    driver = promoted(Driver(canary))
    calls_before = list(driver.calls)
    driver.run()
    assert driver.status.phase is Phase.SUCCEEDED
    assert driver.calls == calls_before
    assert driver.weights() == [0, 0]


def test_suspended_canary_does_nothing() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 10, "metrics": [SUCCESS]})))
    driver.canary = driver.canary.model_copy(
        update={"spec": driver.canary.spec.model_copy(update={"suspend": True})}
    )
    for _ in range(5):
        decision = driver.tick()
        assert decision.actions == ()
        driver.advance(30)
    assert driver.status.phase is Phase.INITIALIZED


def test_a_timed_mirror_or_fault_step_first_switches_on_with_the_rollout() -> None:
    steps = [{"mirror": {"percentage": 30, "duration": "10s"}}, {"setWeight": 40}]
    driver = promoted(Driver(make_canary({"steps": steps, "metrics": [SUCCESS]})))
    driver.tick()
    assert driver.status.phase is Phase.PROGRESSING
    assert driver.routes[-1].routes.mirror_weight == 30
    driver.run()
    assert [(r.routes.canary_weight, r.routes.mirror_weight) for r in driver.routes] == [
        (0, 30),
        (0, 0),
        (40, 0),
        (0, 0),
    ]


def stored(driver: Driver, since: int) -> list[CanaryStatus]:
    """The statuses a runner would store from decision ``since`` on: those that changed the status."""
    statuses = [d.status for d in driver.decisions[since - 1 :]]
    return [after for before, after in itertools.pairwise(statuses) if after != before]


def test_a_passing_check_and_the_weight_step_it_allows_are_one_status_write() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "maxWeight": 100, "metrics": [SUCCESS]})))
    since = len(driver.decisions)
    driver.run()
    writes = stored(driver, since)
    assert [(s.phase, s.canary_weight) for s in writes] == [
        (Phase.PROGRESSING, 0),  # the new revision: the target scales up
        *((Phase.PROGRESSING, weight) for weight in (20, 40, 60, 80, 100)),
        (Phase.PROMOTING, 100),  # with the check at 100
        (Phase.FINALISING, 0),
        (Phase.SUCCEEDED, 0),
    ]
    assert driver.weights() == [0, 20, 40, 60, 80, 100, 0]
    checks = [n for n in driver.calls if n.startswith("metric:")]
    assert len(checks) == 5  # one per weight, none repeated


def test_the_check_of_a_weight_is_never_in_the_tick_that_set_it() -> None:
    """Even with an interval shorter than the status's one-second timestamps: a tick that starts at a
    weight step sets the weight and makes no check; the check at that weight comes in a later tick."""
    document = make_canary({"interval": "500ms", "stepWeight": 25, "metrics": [SUCCESS]}).model_dump(
        by_alias=True, exclude_none=True
    )
    canary = Canary.model_validate(document, context={MIN_INTERVAL_CONTEXT: 0.1})
    steps = compile_steps(canary.spec)
    driver = promoted(Driver(canary))
    checks_after_setting_a_weight = 0
    for _ in range(100):  # ticks 0.7 s apart, as late as a busy runner's: some start past x.5 s
        at = driver.status.current_step
        setting = driver.status.phase is Phase.PROGRESSING and steps[at].kind is StepKind.SET_WEIGHT
        calls = len(driver.calls)
        if driver.tick().status.phase is Phase.SUCCEEDED:
            break
        if setting:
            checks_after_setting_a_weight += len(driver.calls) - calls
        driver.advance(0.7)
    assert driver.status.phase is Phase.SUCCEEDED
    assert driver.weights() == [0, 25, 50, 75, 100, 0]
    assert checks_after_setting_a_weight == 0


def test_fast_fail_samples_within_its_period_of_the_tick_that_first_routed_to_the_canary() -> None:
    fast_fail = {"period": "10s", "maxErrorRate": 20, "minRequests": 5}
    analysis = {"interval": "1m", "stepWeight": 50, "metrics": [SUCCESS], "fastFail": fast_fail}
    driver = promoted(Driver(make_canary(analysis)))
    driver.run(until=lambda s: s.canary_weight == 50)
    assert driver.decisions[-1].requeue_after <= 10, "the next fastFail sample waits a whole interval"
    driver.error_sample = ErrorSample(requests=100, errors=50)
    driver.advance(driver.decisions[-1].requeue_after)
    assert driver.tick().status.phase is Phase.FAILED
    assert driver.status.message.startswith("fastFail")
