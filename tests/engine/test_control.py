"""Manual control, new revisions mid-analysis, reverts, and the revision hash."""

from __future__ import annotations

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Phase
from canaryctl.engine.revision import config_checksum, revision_hash
from canaryctl.engine.types import Event, Workload, WorkloadOp
from tests.engine.driver import Driver, make_canary, metric_value
from tests.engine.test_analysis import hook, rollout
from tests.engine.test_strategies import SUCCESS, promoted


def test_pause_without_duration_waits_for_promote() -> None:
    driver = promoted(Driver(make_canary({"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}]})))
    driver.run(ticks=20, until=lambda s: False)
    assert driver.status.current_step == 1
    assert driver.status.canary_weight == 10
    assert "until promoted" in driver.status.message
    driver.send(CommandKind.PROMOTE)
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.weights() == [0, 10, 40, 0]


def test_promote_full_skips_remaining_steps() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 10, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.send(CommandKind.PROMOTE_FULL)
    driver.tick()
    assert driver.status.phase is Phase.PROMOTING
    assert driver.run().phase is Phase.SUCCEEDED
    assert max(driver.weights()) == 20


def test_promote_skips_the_current_analysis_wait() -> None:
    driver = promoted(Driver(make_canary({"interval": "10m", "stepWeight": 50, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 50)
    driver.send(CommandKind.PROMOTE)
    driver.tick()
    assert driver.status.canary_weight == 100  # the next weight step follows in the same tick
    assert driver.status.current_step == 3
    assert driver.calls.count("metric:request-success-rate") == 0


def test_abort_rolls_back_and_retry_reruns_the_same_revision() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.send(CommandKind.ABORT)
    driver.tick()
    assert driver.status.phase is Phase.FAILED
    assert driver.status.canary_weight == 0
    driver.advance(60)
    driver.tick()
    assert driver.status.phase is Phase.FAILED, "a failed revision is not retried without asking"
    driver.send(CommandKind.RETRY)
    retried = driver.tick().status
    assert retried.phase is Phase.PROGRESSING
    assert retried.failed_checks == 0
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.status.last_promoted_spec == "rev-2"


def test_commands_are_idempotent_across_ticks() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.send(CommandKind.ABORT)
    driver.tick()
    driver.send(CommandKind.RETRY)
    retry = driver.command
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.command = retry  # the same retry still set on the object is not acted on twice
    driver.tick()
    assert driver.status.canary_weight == 40
    assert driver.status.current_step >= 3


def test_pause_and_resume() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.send(CommandKind.PAUSE)
    driver.run(ticks=10, until=lambda s: False)
    assert driver.status.canary_weight == 20 and driver.status.paused
    checks = driver.calls.count("metric:request-success-rate")
    driver.send(CommandKind.RESUME)
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.calls.count("metric:request-success-rate") > checks


def test_skip_command_promotes_this_revision_without_analysis() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 20)
    driver.send(CommandKind.SKIP)
    driver.tick()
    assert driver.status.phase is Phase.PROMOTING


def test_new_revision_mid_analysis_restarts_from_the_first_step() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "threshold": 5, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.metrics["request-success-rate"] = metric_value(50.0)
    driver.run(until=lambda s: s.failed_checks == 1)
    driver.metrics["request-success-rate"] = metric_value(100.0)
    driver.new_revision("rev-3")
    driver.tick()
    status = driver.status
    assert status.phase is Phase.PROGRESSING
    assert (status.canary_weight, status.current_step, status.failed_checks) == (0, 0, 0)
    assert status.last_applied_spec == "rev-3"
    assert any(isinstance(a, Event) and "Restarting analysis" in a.message for a in driver.actions)
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.status.last_promoted_spec == "rev-3"


def test_revert_to_the_promoted_revision_is_a_no_op() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 50, "threshold": 1, "metrics": [SUCCESS]})))
    driver.run()
    driver.new_revision("rev-3")
    driver.metrics["request-success-rate"] = metric_value(10.0)
    assert driver.run().phase is Phase.FAILED
    driver.actions.clear()
    driver.new_revision("rev-2")  # git revert to what the primary runs
    driver.tick()
    assert driver.status.last_applied_spec == "rev-2"
    assert not any(isinstance(a, Workload) and a.op is WorkloadOp.SCALE_CANARY_UP for a in driver.actions)
    assert "already promoted" in driver.status.message


def test_revision_hash_covers_template_and_tracked_configs() -> None:
    template = {"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}}
    configs = {"configmap/app-config": config_checksum({"LOG": "info"})}
    base = revision_hash(template, configs)
    assert base == revision_hash(template, dict(configs))
    assert base != revision_hash(
        {"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.1"}]}}, configs
    )
    assert base != revision_hash(template, {"configmap/app-config": config_checksum({"LOG": "debug"})})


def waiting(driver: Driver) -> Driver:
    """A new revision held by a closed confirm-rollout gate."""
    driver.hooks["gate"] = False
    driver.run(ticks=3, until=lambda s: False)
    assert driver.status.phase is Phase.WAITING
    return driver


def gated() -> Driver:
    return rollout(hook("gate", "confirm-rollout"), stepWeight=50)


def test_abort_while_waiting_rejects_the_revision_until_retry() -> None:
    driver = waiting(gated())
    driver.send(CommandKind.ABORT)
    driver.tick()
    assert driver.status.phase is Phase.FAILED
    assert driver.status.last_applied_spec == "rev-2"
    driver.hooks["gate"] = True
    driver.run(ticks=3, until=lambda s: False)
    assert driver.status.phase is Phase.FAILED, "an aborted revision does not start when the gate opens"
    assert max(driver.weights(), default=0) == 0
    driver.send(CommandKind.RETRY)
    assert driver.run().phase is Phase.SUCCEEDED


def test_skip_and_promote_full_while_waiting_promote_without_analysis() -> None:
    for kind in (CommandKind.SKIP, CommandKind.PROMOTE_FULL):
        driver = waiting(gated())
        driver.send(kind)
        driver.tick()
        assert driver.status.phase is Phase.PROMOTING, kind
        assert driver.run().phase is Phase.SUCCEEDED
        assert driver.status.last_promoted_spec == "rev-2"
        assert driver.calls.count("metric:request-success-rate") == 0
        assert max(driver.weights(), default=0) == 0, "the unanalysed canary never gets traffic"
        assert [a.op for a in driver.actions if isinstance(a, Workload)] == [
            WorkloadOp.PROMOTE,
            WorkloadOp.SCALE_CANARY_DOWN,
        ]


def test_promote_while_waiting_starts_the_rollout_with_analysis() -> None:
    driver = waiting(gated())
    driver.send(CommandKind.PROMOTE)
    driver.tick()
    assert driver.status.phase is Phase.PROGRESSING
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.calls.count("metric:request-success-rate") == 2


def test_a_command_that_does_not_apply_is_reported_not_kept() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 50, "metrics": [SUCCESS]})))
    driver.revision = "rev-1"  # nothing new: the canary stays Initialized
    driver.send(CommandKind.ABORT)
    driver.tick()
    ignored = [a for a in driver.actions if isinstance(a, Event) and a.reason == "CommandIgnored"]
    assert len(ignored) == 1 and "abort" in ignored[0].message and "Initialized" in ignored[0].message
    driver.new_revision("rev-2")
    assert driver.run().phase is Phase.SUCCEEDED, "the old abort does not fire on the next revision"


def test_editing_the_analysis_mid_rollout_continues_from_the_current_weight() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "maxWeight": 100, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.canary = driver.canary.model_copy(
        update={"spec": make_canary({"stepWeight": 10, "maxWeight": 60, "metrics": [SUCCESS]}).spec}
    )
    checks = driver.calls.count("metric:request-success-rate")
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.weights()[-4:] == [40, 50, 60, 0]
    assert driver.calls.count("metric:request-success-rate") - checks == 3, "checks at 40, 50 and 60"
    assert any(
        isinstance(a, Event) and "Analysis of podinfo.test changed" in a.message for a in driver.actions
    )


def test_a_shorter_analysis_mid_rollout_never_promotes_without_a_check() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 10, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.canary = driver.canary.model_copy(
        update={"spec": make_canary({"stepWeight": 50, "maxWeight": 50, "metrics": [SUCCESS]}).spec}
    )
    checks = driver.calls.count("metric:request-success-rate")
    driver.tick()
    assert driver.status.phase is Phase.PROGRESSING
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.calls.count("metric:request-success-rate") > checks
    assert driver.weights()[-3:] == [40, 50, 0], "no analysed step at or below 40: start over"


def test_an_edit_between_the_new_weights_steps_back_to_the_last_analysed_one() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.canary = driver.canary.model_copy(
        update={"spec": make_canary({"stepWeights": [25, 50], "metrics": [SUCCESS]}).spec}
    )
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.weights()[-4:] == [40, 25, 50, 0]


def test_switching_to_blue_green_mid_rollout_runs_every_iteration() -> None:
    driver = promoted(Driver(make_canary({"stepWeight": 20, "metrics": [SUCCESS]})))
    driver.run(until=lambda s: s.canary_weight == 40)
    driver.canary = driver.canary.model_copy(
        update={"spec": make_canary({"iterations": 3, "metrics": [SUCCESS]}).spec}
    )
    checks = driver.calls.count("metric:request-success-rate")
    assert driver.run().phase is Phase.SUCCEEDED
    assert driver.calls.count("metric:request-success-rate") - checks == 3 + 1
