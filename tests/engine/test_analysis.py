"""Failed checks, webhooks of every type, missing data, fastFail and deadlines."""

from __future__ import annotations

from collections.abc import Mapping

from canaryctl.api.models import Phase, Severity
from canaryctl.engine.types import CallHooks, ErrorSample, Event, Workload, WorkloadOp
from tests.engine.driver import Driver, make_canary, metric_value
from tests.engine.test_strategies import SUCCESS, promoted


def hook(name: str, kind: str) -> dict[str, str]:
    return {"name": name, "type": kind, "url": f"http://hooks.test/{name}"}


def rollout(*webhooks: Mapping[str, object], **analysis: object) -> Driver:
    """About to roll out rev-2, judged on the success rate, with these webhooks."""
    return promoted(Driver(make_canary({"metrics": [SUCCESS], "webhooks": list(webhooks), **analysis})))


def test_failed_checks_reach_threshold_and_roll_back() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {
                    "stepWeight": 20,
                    "threshold": 2,
                    "metrics": [SUCCESS],
                    "webhooks": [hook("cleanup", "post-rollout")],
                }
            )
        )
    )
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.metrics["request-success-rate"] = metric_value(90.0)
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert status.failed_checks == 2
    assert driver.routes[-1].routes.canary_weight == 0
    ops = [a.op for a in driver.actions if isinstance(a, Workload)]
    assert ops == [WorkloadOp.SCALE_CANARY_UP, WorkloadOp.SCALE_CANARY_DOWN]
    assert max(driver.weights()) == 20
    assert any(isinstance(a, CallHooks) and a.hooks[0].name == "cleanup" for a in driver.actions)
    alerts = [a for a in driver.actions if isinstance(a, Event) and a.severity is Severity.ERROR]
    assert alerts and "Canary failed" in alerts[-1].message
    failing = next(m for m in status.metrics if m.name == "request-success-rate")
    assert failing.value == 90.0 and failing.min == 99 and failing.verdict.value == "fail"
    # The failed revision is not retried on its own.
    driver.advance(60)
    driver.tick()
    assert driver.status.phase is Phase.FAILED


def test_failed_checks_below_threshold_are_kept_and_the_canary_continues() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 50, "threshold": 3, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 50)
    driver.metrics["request-success-rate"] = metric_value(10.0)
    driver.run(until=lambda s: s.failed_checks == 1)
    weight_at_failure = driver.status.canary_weight
    driver.metrics["request-success-rate"] = metric_value(100.0)
    status = driver.run()
    assert status.phase is Phase.SUCCEEDED
    assert status.failed_checks == 1
    assert weight_at_failure == 50


def test_confirm_rollout_gate_waits_then_starts() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {"stepWeight": 50, "metrics": [SUCCESS], "webhooks": [hook("gate", "confirm-rollout")]}
            )
        )
    )
    driver.hooks["gate"] = False
    driver.run(ticks=3, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING
    assert "waiting for approval gate" in driver.status.message
    assert driver.weights() == []
    driver.hooks["gate"] = True
    assert driver.run().phase is Phase.SUCCEEDED


def test_pre_rollout_failure_counts_as_failed_check_before_any_traffic() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {
                    "stepWeight": 50,
                    "threshold": 2,
                    "metrics": [SUCCESS],
                    "webhooks": [hook("smoke", "pre-rollout")],
                }
            )
        )
    )
    driver.hooks["smoke"] = False
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert status.failed_checks == 2
    assert max(driver.weights()) == 0
    assert driver.calls.count("pre-rollout:smoke") == 2


def test_pre_rollout_runs_once_and_rollout_hooks_every_check() -> None:
    hooks = [hook("smoke", "pre-rollout"), hook("load", "rollout")]
    driver = promoted(Driver(make_canary({"stepWeight": 50, "metrics": [SUCCESS], "webhooks": hooks})))
    driver.run()
    assert driver.calls.count("pre-rollout:smoke") == 1
    assert driver.calls.count("rollout:load") == 2


def test_failing_rollout_hook_is_a_failed_check() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {
                    "stepWeight": 50,
                    "threshold": 1,
                    "metrics": [SUCCESS],
                    "webhooks": [hook("load", "rollout")],
                }
            )
        )
    )
    driver.hooks["load"] = False
    assert driver.run().phase is Phase.FAILED


def test_confirm_traffic_increase_holds_the_weight() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {
                    "stepWeight": 20,
                    "metrics": [SUCCESS],
                    "webhooks": [hook("more", "confirm-traffic-increase")],
                }
            )
        )
    )
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.hooks["more"] = False
    driver.run(ticks=10, until=lambda s: False)
    assert driver.status.canary_weight == 20
    assert driver.status.phase is Phase.PROGRESSING
    driver.hooks["more"] = True
    assert driver.run().phase is Phase.SUCCEEDED


def test_confirm_promotion_waits_and_keeps_analysing() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {"stepWeight": 50, "metrics": [SUCCESS], "webhooks": [hook("ship", "confirm-promotion")]}
            )
        )
    )
    driver.hooks["ship"] = False
    driver.run(until=lambda s: s.phase is Phase.WAITING_PROMOTION)
    checks = driver.calls.count("metric:request-success-rate")
    driver.run(ticks=6, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING_PROMOTION
    assert driver.calls.count("metric:request-success-rate") > checks
    driver.hooks["ship"] = True
    assert driver.run().phase is Phase.SUCCEEDED


def test_rollback_hook_rolls_back_at_once() -> None:
    driver = promoted(
        Driver(make_canary({"stepWeight": 10, "metrics": [SUCCESS], "webhooks": [hook("stop", "rollback")]}))
    )
    driver.hooks["stop"] = False
    driver.run(until=lambda s: s.canary_weight == 30)
    driver.hooks["stop"] = True
    driver.tick()
    assert driver.status.phase is Phase.FAILED
    assert "rollback hook stop" in driver.status.message


def test_no_data_holds_without_failing_until_the_deadline() -> None:
    driver = promoted(
        Driver(make_canary({"stepWeight": 50, "metrics": [SUCCESS]}, progressDeadlineSeconds=120))
    )
    driver.run(until=lambda s: s.canary_weight == 50)
    driver.metrics["request-success-rate"] = metric_value(None)
    driver.run(ticks=8, until=lambda s: False, max_seconds=100)
    assert driver.status.phase is Phase.PROGRESSING
    assert driver.status.failed_checks == 0
    assert driver.status.canary_weight == 50
    assert "no values found" in driver.status.message
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert "Progress deadline exceeded" in status.message


def test_no_data_policies_fail_and_pass() -> None:
    failing = promoted(
        Driver(make_canary({"stepWeight": 50, "threshold": 1, "metrics": [{**SUCCESS, "onNoData": "fail"}]}))
    )
    failing.metrics["request-success-rate"] = metric_value(None)
    assert failing.run().phase is Phase.FAILED
    passing = promoted(Driver(make_canary({"stepWeight": 50, "metrics": [{**SUCCESS, "onNoData": "pass"}]})))
    passing.metrics["request-success-rate"] = metric_value(None)
    assert passing.run().phase is Phase.SUCCEEDED


def test_query_errors_never_pass_even_with_on_no_data_pass() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {"stepWeight": 50, "metrics": [{**SUCCESS, "onNoData": "pass"}]}, progressDeadlineSeconds=60
            )
        )
    )
    from canaryctl.engine.types import MetricObservation, MetricSample

    driver.metrics["request-success-rate"] = lambda name: MetricObservation(
        name, MetricSample(None), error="connection refused"
    )
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert not any(isinstance(a, Workload) and a.op is WorkloadOp.PROMOTE for a in driver.actions)
    assert "connection refused" in status.message


def test_fast_fail_rolls_back_before_the_next_interval() -> None:
    driver = promoted(
        Driver(
            make_canary(
                {
                    "interval": "1m",
                    "stepWeight": 20,
                    "metrics": [SUCCESS],
                    "fastFail": {"period": "5s", "maxErrorRate": 10, "minRequests": 20},
                }
            )
        )
    )
    driver.run(until=lambda s: s.canary_weight == 20)
    exposed_at = driver.now
    driver.error_sample = ErrorSample(requests=10, errors=9)  # too few requests to judge
    driver.run(ticks=2, until=lambda s: False, max_seconds=8)
    assert driver.status.phase is Phase.PROGRESSING
    driver.error_sample = ErrorSample(requests=100, errors=50)
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert "fastFail" in status.message
    assert (driver.now - exposed_at).total_seconds() < 60


def test_canary_not_ready_past_deadline_fails() -> None:
    driver = promoted(
        Driver(make_canary({"stepWeight": 50, "metrics": [SUCCESS]}, progressDeadlineSeconds=30))
    )
    driver.canary_ready = False
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert "not ready" in status.message
    assert driver.weights() == [0, 0]


def test_primary_not_ready_at_initialization_fails_after_deadline() -> None:
    driver = Driver(make_canary({"stepWeight": 50}, progressDeadlineSeconds=20), primary_ready=False)
    status = driver.run()
    assert status.phase is Phase.FAILED
    assert "primary" in status.message


def test_failed_hooks_alert_unless_muted() -> None:
    hooks = [hook("load", "rollout"), {**hook("quiet", "rollout"), "muteAlert": True}]
    driver = promoted(
        Driver(make_canary({"stepWeight": 50, "threshold": 5, "metrics": [SUCCESS], "webhooks": hooks}))
    )
    driver.run(until=lambda s: s.canary_weight == 50)
    driver.hooks["quiet"] = False
    driver.run(until=lambda s: s.failed_checks == 1)
    warnings = [a for a in driver.actions if isinstance(a, Event) and a.severity is Severity.WARN]
    assert warnings == [], "a muted hook's failure counts but does not page anyone"
    driver.hooks["quiet"] = True
    driver.hooks["load"] = False
    driver.run(until=lambda s: s.failed_checks == 2)
    warnings = [a for a in driver.actions if isinstance(a, Event) and a.severity is Severity.WARN]
    assert len(warnings) == 1 and "rollout hook load failed" in warnings[0].message


def test_a_recovered_canary_gets_a_whole_progress_deadline_for_the_next_blip() -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "30m"}}, {"setWeight": 50}]
    driver = promoted(Driver(make_canary({"steps": steps, "metrics": [SUCCESS]}, progressDeadlineSeconds=60)))
    driver.run(until=lambda s: s.current_step == 1)
    for _ in range(2):  # two one-tick blips 15 minutes apart, each far shorter than the deadline
        driver.canary_ready = False
        driver.tick()
        assert driver.status.held_since is not None
        driver.advance(5)
        driver.canary_ready = True
        driver.tick()
        assert driver.status.held_since is None
        driver.advance(15 * 60)
    assert driver.status.phase is Phase.PROGRESSING
    assert driver.run().phase is Phase.SUCCEEDED


def promoting(until: Phase) -> Driver:
    webhooks = [hook("cleanup", "post-rollout")]
    canary = make_canary(
        {"stepWeight": 50, "metrics": [SUCCESS], "webhooks": webhooks}, progressDeadlineSeconds=60
    )
    driver = promoted(Driver(canary))
    driver.run(until=lambda s: s.phase is until)
    return driver


def test_a_primary_failing_during_promotion_keeps_all_traffic_on_the_canary() -> None:
    for broken_in in (Phase.PROMOTING, Phase.FINALISING):
        driver = promoting(broken_in)
        driver.primary_ready = False
        driver.run(ticks=3, until=lambda s: False)
        assert driver.status.phase is broken_in, "waits for the primary within the deadline"
        status = driver.run()
        assert status.phase is Phase.FAILED, broken_in
        assert status.canary_weight == 100
        assert driver.routes[-1].routes.canary_weight == 100
        ops = [a.op for a in driver.actions if isinstance(a, Workload)]
        assert ops[-1] is WorkloadOp.PROMOTE, "the canary, the only healthy copy, is not scaled down"
        alerts = [a for a in driver.actions if isinstance(a, Event) and a.severity is Severity.ERROR]
        assert "all traffic stays on the canary" in alerts[-1].message
        assert any(isinstance(a, CallHooks) for a in driver.actions)
        assert status.last_promoted_spec is None
        driver.advance(60)
        driver.tick()
        assert driver.status.canary_weight == 100, "stays on the canary until a new revision or retry"
