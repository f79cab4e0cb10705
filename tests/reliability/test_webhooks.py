"""Webhooks that hang or answer 500, through the real runner and engine on the local platform.

Each case is an e2e scenario (real Envoy, demo apps, user traffic) whose hook points at a real HTTP
receiver that answers 200, answers 500 or hangs until the caller hangs up. The receiver measures how
long each call was held, so "the timeout is honoured" is measured from the far side of the wire.
All cases run concurrently; the module takes as long as the slowest (about 10 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import pytest
from aiohttp import web

from canaryctl.api.models import Phase
from canaryctl.demo.servers import LocalServer
from e2e.platform import Action, Context, Run, Scenario, Tick, run_scenario

HOOK_TIMEOUT_SECONDS = 1.0
# How long past its timeout a hanging call may stay open, as the receiver measures it (the hang-up is
# seen on a poll). The receiver's clock starts when the request arrives, after the client's: it can
# bound the timeout from above only; the client's own message ("timed out after 1s") says the rest.
# Both event loops share one process and a loaded 2-core machine (a hung call measured 2.8 s at load
# average 14), so the slack is wide; a hang the timeout did not cut stays open MAX_HANG_SECONDS, five
# times the bound, so the two cases stay far apart.
TIMEOUT_SLACK_SECONDS = 5.0
MAX_HANG_SECONDS = 30.0
POLL_SECONDS = 0.02
HELD_CALLS = 2  # calls a failing gate answers before the scenario's operator fixes it
FIX_WITHIN_SECONDS = 30.0
SUCCESS = {"name": "request-success-rate", "interval": "5s", "thresholdRange": {"min": 95}}


class Behaviour(Enum):
    OK = 200
    FAIL = 500
    HANG = 0


@dataclass(frozen=True)
class Call:
    seconds: float  # until answered, or until the caller hung up on a hanging hook
    status: int


@dataclass
class HookReceiver:
    """POST /<case> answers per the case's current behaviour and records every call."""

    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{case}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        case = request.match_info["case"]
        started = time.monotonic()
        behaviour = self.behaviour[case]
        status = behaviour.value
        if behaviour is Behaviour.HANG:
            for _ in range(round(MAX_HANG_SECONDS / POLL_SECONDS)):
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(POLL_SECONDS)
            status = 504  # never delivered when the caller already gave up
        self.calls.setdefault(case, []).append(Call(time.monotonic() - started, status))
        return web.Response(status=status, text=behaviour.name)


RECEIVER = HookReceiver()


@dataclass(frozen=True)
class Case:
    name: str
    hook_type: str
    behaviour: Behaviour
    fixed_after_calls: bool  # the operator makes the hook answer 200 after HELD_CALLS calls
    analysis: dict[str, Any] = field(default_factory=lambda: {"stepWeight": 50, "maxWeight": 50})

    def scenario(self, receiver_url: str) -> Scenario:
        hook = {
            "name": "hook",
            "type": self.hook_type,
            "url": f"{receiver_url}/{self.name}",
            "timeout": f"{HOOK_TIMEOUT_SECONDS:g}s",
        }
        RECEIVER.behaviour[self.name] = self.behaviour

        def analysis(_loadtester: str, _listen: str) -> dict[str, Any]:
            return {"interval": "1s", **self.analysis, "metrics": [SUCCESS], "webhooks": [hook]}

        scenario = Scenario(self.name, analysis)
        return replace(scenario, act=self._fix()) if self.fixed_after_calls else scenario

    def _fix(self) -> Action:
        async def fix(context: Context) -> None:
            for _ in range(round(FIX_WITHIN_SECONDS / POLL_SECONDS)):
                if len(RECEIVER.calls.get(self.name, [])) >= HELD_CALLS:
                    break
                await asyncio.sleep(POLL_SECONDS)
            FIXED_AT[self.name] = len(context.run.ticks)
            RECEIVER.behaviour[self.name] = Behaviour.OK

        return fix


FIXED_AT: dict[str, int] = {}  # case -> number of ticks recorded when its hook was fixed

CASES = [
    Case("confirm-rollout-hangs", "confirm-rollout", Behaviour.HANG, fixed_after_calls=True),
    Case(
        "pre-rollout-500",
        "pre-rollout",
        Behaviour.FAIL,
        fixed_after_calls=False,
        analysis={"stepWeight": 50, "threshold": 2},
    ),
    Case("traffic-increase-500", "confirm-traffic-increase", Behaviour.FAIL, fixed_after_calls=True),
    Case(
        "rollout-hangs",
        "rollout",
        Behaviour.HANG,
        fixed_after_calls=False,
        analysis={"stepWeight": 50, "threshold": 2},
    ),
    Case("confirm-promotion-hangs", "confirm-promotion", Behaviour.HANG, fixed_after_calls=True),
    Case("rollback-500", "rollback", Behaviour.FAIL, fixed_after_calls=False),
]


@pytest.fixture(scope="module")
def runs(fast_intervals: None) -> dict[str, Run]:
    async def all_cases() -> list[Run]:
        receiver = await LocalServer(RECEIVER.build_app()).start()
        try:
            return await asyncio.gather(*(run_scenario(case.scenario(receiver.url)) for case in CASES))
        finally:
            await receiver.stop()

    results = asyncio.run(all_cases())
    for run in results:
        assert not run.errors, run.errors
    return {case.name: run for case, run in zip(CASES, results, strict=True)}


def _before_fix(run: Run, case: str) -> list[Tick]:
    return run.ticks[: FIXED_AT[case]]


def _cut_off_at_the_timeout(case: str) -> None:
    calls = RECEIVER.calls[case]
    hung = [c.seconds for c in calls if c.status == 504]
    assert hung, calls
    assert all(s < HOOK_TIMEOUT_SECONDS + TIMEOUT_SLACK_SECONDS for s in hung), hung


def _every(run: Run, predicate: Callable[[Tick], bool]) -> bool:
    return all(predicate(tick) for tick in run.ticks)


def test_confirm_rollout_hanging_keeps_the_canary_waiting_until_it_answers(runs: dict[str, Run]) -> None:
    run = runs["confirm-rollout-hangs"]
    _cut_off_at_the_timeout("confirm-rollout-hangs")
    held = _before_fix(run, "confirm-rollout-hangs")
    assert held and all(t.phase is Phase.WAITING and t.weight == 0 for t in held)
    assert "waiting for approval hook" in held[-1].message
    assert run.phase is Phase.SUCCEEDED


def test_pre_rollout_500_counts_failed_checks_and_rolls_back(runs: dict[str, Run]) -> None:
    run = runs["pre-rollout-500"]
    assert run.phase is Phase.FAILED
    assert _every(run, lambda t: t.weight == 0), "no traffic reached a canary whose pre-rollout check failed"
    assert run.canary is not None and run.canary.status is not None
    assert run.canary.status.failed_checks == 2
    assert {c.status for c in RECEIVER.calls["pre-rollout-500"]} == {500}
    assert any("pre-rollout check hook failed" in t.message for t in run.ticks)


def test_confirm_traffic_increase_500_holds_the_weight(runs: dict[str, Run]) -> None:
    run = runs["traffic-increase-500"]
    held = _before_fix(run, "traffic-increase-500")
    assert held and all(t.weight == 0 and t.phase is not Phase.FAILED for t in held)
    assert any("waiting for traffic increase approval" in t.message for t in held)
    assert run.canary is not None and run.canary.status is not None
    assert run.canary.status.failed_checks == 0, "a closed traffic gate is not a failed check"
    assert run.phase is Phase.SUCCEEDED


def test_rollout_hook_hanging_times_out_and_fails_checks(runs: dict[str, Run]) -> None:
    run = runs["rollout-hangs"]
    _cut_off_at_the_timeout("rollout-hangs")
    assert run.phase is Phase.FAILED
    assert any(f"timed out after {HOOK_TIMEOUT_SECONDS:g}s" in t.message for t in run.ticks)
    assert run.canary is not None and run.canary.status is not None
    assert run.canary.status.failed_checks == 2


def test_confirm_promotion_hanging_holds_in_waiting_promotion(runs: dict[str, Run]) -> None:
    run = runs["confirm-promotion-hangs"]
    _cut_off_at_the_timeout("confirm-promotion-hangs")
    held = _before_fix(run, "confirm-promotion-hangs")
    assert any(t.phase is Phase.WAITING_PROMOTION for t in held)
    assert not any(t.phase in (Phase.PROMOTING, Phase.SUCCEEDED) for t in held)
    assert run.phase is Phase.SUCCEEDED


def test_rollback_hook_answering_500_does_not_roll_back(runs: dict[str, Run]) -> None:
    run = runs["rollback-500"]
    assert len(RECEIVER.calls["rollback-500"]) >= 2
    assert {c.status for c in RECEIVER.calls["rollback-500"]} == {500}
    assert run.phase is Phase.SUCCEEDED
