"""``status --watch`` as a CI step: exit 0 when the --until state is reached, 1 on failure, 2 on timeout.

A background task plays the operator: it flips the Canary's status in the emulator while the watch polls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest

from tests.plugin import scenarios
from tests.plugin.helpers import kubectl_canary

pytestmark = pytest.mark.asyncio

POLL = "0.02"


async def later(emulator: kmock.KubernetesEmulator, name: str, status: dict[str, Any]) -> None:
    """After a few polls, the "operator" moves the rollout on."""
    await asyncio.sleep(0.15)
    current = scenarios.stored(emulator, "Canary", name)
    scenarios.seed(emulator, [current | {"status": current["status"] | status}])


async def watch(emulator: kmock.KubernetesEmulator, *argv: str) -> int:
    return await kubectl_canary(emulator, "status", *argv, "-n", "test", "--watch", "--poll-interval", POLL)


@pytest.mark.parametrize(
    ("change", "until", "expected"),
    [
        ({"phase": "Succeeded", "message": "done"}, "succeeded", 0),
        ({"phase": "Failed", "message": "Canary failed!"}, "succeeded", 1),
        ({"phase": "Failed", "message": "Canary failed!"}, "failed", 0),
        ({"phase": "Promoting", "message": "Promoting"}, "promoted", 0),
        ({"paused": True, "message": "Rollout paused by user"}, "paused", 0),
        ({"phase": "WaitingPromotion", "message": "gate closed"}, "paused", 0),
    ],
)
async def test_watch_exits_when_the_rollout_gets_there(
    emulator: kmock.KubernetesEmulator,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    until: str,
    expected: int,
) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    operator = asyncio.create_task(later(emulator, "podinfo", change))
    code = await watch(emulator, "podinfo", "--until", until, "--timeout", "20s")
    await operator
    assert code == expected
    out = capsys.readouterr().out
    # A log gets the status once, a line per change, and the final status.
    assert out.count("Name:          podinfo") == 2
    assert "podinfo Progressing step 6/10 weight 30% failed 1/5: Check 0/1 passed" in out
    assert change["message"] in out.split("\n\n")[-1] or change["message"] in out


async def test_watch_times_out_with_2(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await watch(emulator, "podinfo", "--timeout", "0.2s") == 2
    assert "timed out after 1s waiting for succeeded" in capsys.readouterr().err


async def test_watch_of_a_finished_rollout_returns_at_once(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios.seed(emulator, scenarios.succeeded())
    assert await watch(emulator, "done", "--timeout", "5s", "-o", "json") == 0
    assert '"phase": "Succeeded"' in capsys.readouterr().out  # -o prints only the final data


async def test_watch_waits_for_a_new_revision_to_roll_out(emulator: kmock.KubernetesEmulator) -> None:
    """Right after `kubectl apply` the Canary still says Succeeded (for the old revision)."""
    scenarios.seed(emulator, [*scenarios.succeeded(), scenarios.deployment("done", "done", "6.1.0", 1, 1)])
    assert await watch(emulator, "done", "--timeout", "0.2s") == 2


async def test_watch_of_a_missing_canary_is_an_error(emulator: kmock.KubernetesEmulator) -> None:
    assert await watch(emulator, "ghost", "--timeout", "1s") == 1
