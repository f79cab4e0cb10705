"""Gates and webhooks in Flagger's order: which hooks run, when, and how often a wait is announced."""

from __future__ import annotations

from canaryctl.api.models import Phase, Severity
from canaryctl.engine.types import Event, Workload, WorkloadOp
from tests.engine.driver import Driver, make_canary
from tests.engine.test_analysis import hook, rollout
from tests.engine.test_strategies import SUCCESS, promoted


def warnings_about(driver: Driver, text: str) -> list[Event]:
    return [a for a in driver.actions if isinstance(a, Event) and a.warning and text in a.message]


def checks(driver: Driver) -> int:
    return driver.calls.count("metric:request-success-rate")


def test_blue_green_keeps_traffic_on_the_primary_until_promotion_is_approved() -> None:
    driver = rollout(hook("ship", "confirm-promotion"), iterations=2)
    driver.hooks["ship"] = False
    driver.run(until=lambda s: s.phase is Phase.WAITING_PROMOTION)
    assert driver.status.canary_weight == 0, "the canary must not serve users before approval"
    waiting_checks = checks(driver)
    driver.run(ticks=6, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING_PROMOTION
    assert driver.status.canary_weight == 0
    assert checks(driver) > waiting_checks, "the idle canary is still analysed while waiting"
    assert max(driver.weights()) == 0

    driver.hooks["ship"] = True
    driver.run(until=lambda s: s.canary_weight == 100)
    switched_at, checks_before = driver.now, checks(driver)
    assert not any(isinstance(a, Workload) and a.op is WorkloadOp.PROMOTE for a in driver.actions)
    driver.run(until=lambda s: s.phase is Phase.PROMOTING)
    assert checks(driver) == checks_before + 1, "one more check with all traffic on the canary"
    assert (driver.now - switched_at).total_seconds() >= 10
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.weights() == [0, 100, 0]


def test_blue_green_mirroring_keeps_mirroring_while_waiting_for_promotion() -> None:
    driver = rollout(hook("ship", "confirm-promotion"), iterations=2, mirror=True)
    driver.hooks["ship"] = False
    driver.run(until=lambda s: s.phase is Phase.WAITING_PROMOTION)
    assert (driver.status.canary_weight, driver.status.mirror_weight) == (0, 100)
    driver.hooks["ship"] = True
    assert driver.run().phase is Phase.SUCCEEDED
    timeline = [(r.routes.canary_weight, r.routes.mirror_weight) for r in driver.routes]
    assert timeline == [(0, 0), (0, 100), (0, 0), (100, 0), (0, 0)]


def test_confirm_rollout_warns_and_alerts_once_per_wait() -> None:
    driver = rollout(hook("gate", "confirm-rollout"), stepWeight=50)
    driver.hooks["gate"] = False
    driver.run(ticks=8, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING
    assert driver.calls.count("confirm-rollout:gate") == 8, "the gate is asked on every tick"
    announced = warnings_about(driver, "waiting for approval gate")
    assert len(announced) == 1 and announced[0].severity is Severity.WARN


def test_confirm_promotion_warns_and_alerts_once_per_wait() -> None:
    driver = rollout(hook("ship", "confirm-promotion"), stepWeight=50)
    driver.hooks["ship"] = False
    driver.run(until=lambda s: s.phase is Phase.WAITING_PROMOTION)
    driver.run(ticks=8, until=lambda s: False)
    assert driver.calls.count("confirm-promotion:ship") >= 8
    announced = warnings_about(driver, "waiting for promotion approval ship")
    assert len(announced) == 1 and announced[0].severity is Severity.WARN


def test_a_muted_gate_warns_without_alerting() -> None:
    gate = {**hook("gate", "confirm-rollout"), "muteAlert": True}
    driver = rollout(gate, stepWeight=50)
    driver.hooks["gate"] = False
    driver.run(ticks=3, until=lambda s: False)
    announced = warnings_about(driver, "waiting for approval gate")
    assert len(announced) == 1 and announced[0].severity is None


def test_hooks_of_one_type_run_in_order_and_stop_at_the_first_failure() -> None:
    webhooks = [hook(name, "pre-rollout") for name in ("migrate", "smoke", "seed")]
    driver = rollout(*webhooks, stepWeight=50, threshold=1)
    driver.hooks["migrate"] = False
    assert driver.run().phase is Phase.FAILED
    assert [c for c in driver.calls if c.startswith("pre-rollout")] == ["pre-rollout:migrate"]
    assert [need.hooks for need in driver.needs if len(need.hooks) > 1] == [], "asked for one at a time"


def test_rollout_hooks_run_in_order_before_the_metrics_and_a_failure_skips_the_rest() -> None:
    driver = rollout(hook("load", "rollout"), hook("smoke", "rollout"), stepWeight=50, maxWeight=50)
    driver.run(until=lambda s: s.canary_weight == 50)
    driver.calls.clear()
    driver.hooks["load"] = False
    driver.run(until=lambda s: s.failed_checks == 1)
    assert driver.calls == ["rollout:load"], "neither the next hook nor the metrics after a failed hook"
    driver.hooks["load"] = True
    driver.calls.clear()
    driver.run(until=lambda s: s.phase is Phase.PROMOTING)
    assert driver.calls == ["rollout:load", "rollout:smoke", "metric:request-success-rate"]


def test_rollback_hooks_stop_at_the_first_that_signals() -> None:
    driver = rollout(*(hook(name, "rollback") for name in ("first", "second", "third")), stepWeight=20)
    driver.hooks.update(first=False, second=False, third=False)
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.hooks["second"] = True
    driver.calls.clear()
    driver.tick()
    assert driver.status.phase is Phase.FAILED
    assert driver.calls == ["rollback:first", "rollback:second"]


def test_skip_analysis_promotes_before_pre_rollout_hooks() -> None:
    webhooks = [hook("smoke", "pre-rollout")]
    canary = make_canary({"stepWeight": 10, "metrics": [SUCCESS], "webhooks": webhooks}, skipAnalysis=True)
    driver = promoted(Driver(canary))
    driver.hooks["smoke"] = False
    assert driver.run().phase is Phase.SUCCEEDED
    assert "pre-rollout:smoke" not in driver.calls
    assert driver.status.failed_checks == 0


def test_skip_analysis_still_waits_for_confirm_rollout() -> None:
    webhooks = [hook("gate", "confirm-rollout")]
    canary = make_canary({"stepWeight": 10, "metrics": [SUCCESS], "webhooks": webhooks}, skipAnalysis=True)
    driver = promoted(Driver(canary))
    driver.hooks["gate"] = False
    driver.run(ticks=3, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING
    driver.hooks["gate"] = True
    assert driver.run().phase is Phase.SUCCEEDED


def test_confirm_traffic_increase_warns_each_interval_like_flagger() -> None:
    driver = rollout(hook("more", "confirm-traffic-increase"), stepWeight=20)
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.hooks["more"] = False
    driver.actions.clear()
    driver.calls.clear()
    driver.run(ticks=6, until=lambda s: False)
    asked = driver.calls.count("confirm-traffic-increase:more")
    assert asked > 1
    assert len(warnings_about(driver, "waiting for traffic increase approval more")) == asked
    assert driver.status.canary_weight == 20
