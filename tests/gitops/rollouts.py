"""Canary objects at every stage a GitOps tool can find them in, with statuses the engine produced.

The engine runs the rollout (tests.engine.driver); each object carries ``metadata.generation`` and, as the
operator stores it, ``status.observedGeneration``. The InvalidSpec case is the operator's own status
for a spec that does not validate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from canaryctl.api.control import CommandKind
from canaryctl.api.models import Canary, Phase
from canaryctl.engine.types import ErrorSample
from canaryctl.operator.handlers import invalid_status
from tests.engine.driver import Driver, make_canary, metric_value

Obj = dict[str, Any]
GENERATION = 3
SUCCESS = {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}
GATE = "http://gate.test/"


def _driver(**analysis: Any) -> Driver:
    """rev-1 installed (Initialized); rev-2 about to be rolled out."""
    driver = Driver(make_canary({"stepWeight": 25, "metrics": [SUCCESS], **analysis}))
    driver.metrics["request-success-rate"] = metric_value(100.0)
    driver.run(until=lambda s: s.phase is Phase.INITIALIZED)
    return driver


def stored(canary: Canary, generation: int = GENERATION, observed: int | None = GENERATION) -> Obj:
    """The object as the API server would serve it after the operator stored the status."""
    obj = canary.to_wire()
    obj["metadata"]["generation"] = generation
    if obj.get("status") is not None and observed is not None:
        obj["status"]["observedGeneration"] = observed
    return obj


def initialized() -> Obj:
    return stored(_driver().canary)


def progressing() -> Obj:
    driver = _driver()
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.canary_weight == 50)
    return stored(driver.canary)


def paused() -> Obj:
    driver = _driver()
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.canary_weight == 25)
    driver.send(CommandKind.PAUSE)
    driver.tick()
    return stored(driver.canary)


def waiting() -> Obj:
    driver = _driver(webhooks=[{"name": "approve", "type": "confirm-rollout", "url": GATE}])
    driver.hooks["approve"] = False
    driver.new_revision("rev-2")
    driver.run(ticks=3, until=lambda s: s.phase is Phase.WAITING)
    return stored(driver.canary)


def waiting_promotion() -> Obj:
    driver = _driver(webhooks=[{"name": "ship", "type": "confirm-promotion", "url": GATE}])
    driver.hooks["ship"] = False
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.phase is Phase.WAITING_PROMOTION)
    return stored(driver.canary)


def promoting() -> Obj:
    driver = _driver()
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.phase is Phase.PROMOTING)
    return stored(driver.canary)


def succeeded() -> Obj:
    driver = _driver()
    driver.new_revision("rev-2")
    driver.run()
    return stored(driver.canary)


def failed() -> Obj:
    driver = _driver(threshold=2)
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.canary_weight == 25)
    driver.metrics["request-success-rate"] = metric_value(80.0)
    driver.run()
    return stored(driver.canary)


def fast_failed() -> Obj:
    driver = _driver(fastFail={"period": "5s", "maxErrorRate": 10, "minRequests": 20})
    driver.new_revision("rev-2")
    driver.run(until=lambda s: s.canary_weight == 25)
    driver.error_sample = ErrorSample(requests=100, errors=40)
    driver.run()
    return stored(driver.canary)


def invalid() -> Obj:
    """A progressing Canary edited into an invalid spec: the operator's InvalidSpec status."""
    obj = progressing()
    obj["metadata"]["generation"] = GENERATION + 1
    obj["spec"]["analysis"]["stepWeight"] = -5
    message = "spec.analysis.stepWeight: Input should be greater than or equal to 0"
    obj["status"] = invalid_status(obj["status"], message, "2026-01-01T00:10:00Z", GENERATION + 1)
    return obj


def edited() -> Obj:
    """A Succeeded Canary whose spec was just edited: the operator has not seen the new generation."""
    obj = succeeded()
    obj["metadata"]["generation"] = GENERATION + 1
    return obj


def created() -> Obj:
    """Just applied: no status yet."""
    obj = copy.deepcopy(initialized())
    del obj["status"]
    return obj


ROLLOUTS: dict[str, Callable[[], Obj]] = {
    "created": created,
    "initialized": initialized,
    "progressing": progressing,
    "paused": paused,
    "waiting": waiting,
    "waiting-promotion": waiting_promotion,
    "promoting": promoting,
    "succeeded": succeeded,
    "failed": failed,
    "fast-failed": fast_failed,
    "invalid": invalid,
    "edited": edited,
}
