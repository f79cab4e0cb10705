"""The control verbs write the command annotation exactly as the operator reads it, and say what the
operator will do with it."""

from __future__ import annotations

import kmock
import pytest

from canaryctl.api.control import COMMAND_ANNOTATION, CommandKind, decode_command
from canaryctl.api.models import Canary
from canaryctl.cli.apiserver import ApiError
from canaryctl.cli.control_cmd import effect
from canaryctl.cli.kube import describe_failure
from tests.plugin import scenarios
from tests.plugin.helpers import kubectl_canary

VERBS = [
    (["promote"], CommandKind.PROMOTE),
    (["promote", "--full"], CommandKind.PROMOTE_FULL),
    (["abort"], CommandKind.ABORT),
    (["retry"], CommandKind.RETRY),
    (["pause"], CommandKind.PAUSE),
    (["resume"], CommandKind.RESUME),
    (["skip"], CommandKind.SKIP),
]


def command_of(emulator: kmock.KubernetesEmulator, name: str) -> tuple[CommandKind, str] | None:
    annotations = scenarios.stored(emulator, "Canary", name)["metadata"].get("annotations") or {}
    return decode_command(annotations.get(COMMAND_ANNOTATION))


@pytest.mark.asyncio
@pytest.mark.parametrize(("argv", "kind"), VERBS)
async def test_verb_writes_the_command_annotation(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str], argv: list[str], kind: CommandKind
) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await kubectl_canary(emulator, argv[0], "podinfo", *argv[1:], "-n", "test") == 0
    decoded = command_of(emulator, "podinfo")
    assert decoded is not None and decoded[0] is kind
    first_id = decoded[1]
    out = capsys.readouterr().out
    assert out.startswith(f"canary test/podinfo: {kind.value} requested ({COMMAND_ANNOTATION}={kind.value}/")
    assert "  the operator will: " in out
    # A second request is a new command (the operator acts once per id); the spec is untouched.
    assert await kubectl_canary(emulator, argv[0], "podinfo", *argv[1:], "-n", "test") == 0
    decoded = command_of(emulator, "podinfo")
    assert decoded is not None and decoded[1] != first_id
    assert scenarios.stored(emulator, "Canary", "podinfo")["spec"] == scenarios.progressing()[0]["spec"]


@pytest.mark.asyncio
async def test_verb_on_a_missing_canary(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await kubectl_canary(emulator, "abort", "ghost", "-n", "test") == 1
    assert capsys.readouterr().err == "kubectl canary: error: canary test/ghost: not found\n"


def test_forbidden_names_object_and_cause() -> None:
    exc = ApiError(403, "Forbidden", 'User "dev" cannot patch canaries')
    assert str(describe_failure("canary test/podinfo", exc)) == (
        'canary test/podinfo: forbidden: User "dev" cannot patch canaries'
    )


def canary_in(make: str, **status: object) -> Canary:
    obj = getattr(scenarios, make)()[0]
    obj["status"] |= status
    return Canary.model_validate(obj)


@pytest.mark.parametrize(
    ("kind", "make", "status", "expected"),
    [
        (CommandKind.PROMOTE, "progressing", {}, "step 6/10 analysis × 1 ends now; next: setWeight 40%"),
        (CommandKind.PROMOTE, "timed_pause", {}, "step 4/6 pause 300s ends now; next: setWeight 50%"),
        (
            CommandKind.PROMOTE,
            "paused",
            {},
            "nothing while the rollout is paused",
        ),
        (
            CommandKind.PROMOTE,
            "succeeded",
            {},
            "nothing: the canary is Succeeded; there is no",
        ),
        (CommandKind.PROMOTE, "waiting_promotion", {}, "nothing: all steps are done, promotion waits on"),
        (CommandKind.PROMOTE_FULL, "waiting_promotion", {}, "the remaining steps and analysis are skipped"),
        (CommandKind.SKIP, "progressing", {}, "the remaining steps and analysis are skipped"),
        (CommandKind.ABORT, "progressing", {}, "rollback: all traffic to the primary"),
        (CommandKind.ABORT, "paused", {}, "rollback: all traffic to the primary"),
        (CommandKind.ABORT, "failed", {}, "nothing: the canary is Failed"),
        (CommandKind.RETRY, "failed", {}, "the rollout of the current revision restarts from step 1"),
        (CommandKind.RETRY, "progressing", {}, "nothing: the canary is Progressing; retry only restarts"),
        (CommandKind.PAUSE, "progressing", {}, "the rollout holds at its current step"),
        (CommandKind.PAUSE, "succeeded", {}, "no rollout is running; the next one holds"),
        (CommandKind.RESUME, "paused", {}, "the rollout continues"),
        (CommandKind.RESUME, "progressing", {}, "nothing: the rollout is not paused"),
        (CommandKind.PROMOTE, "progressing", {"phase": None}, "nothing: the canary is not initialized yet"),
        (CommandKind.ABORT, "progressing", {"phase": "Waiting"}, "the waiting revision is rejected"),
        (CommandKind.PROMOTE_FULL, "progressing", {"phase": "Waiting"}, "the waiting revision is promoted"),
        (CommandKind.PROMOTE, "progressing", {"phase": "Waiting"}, "the rollout starts now"),
        (CommandKind.RESUME, "progressing", {"phase": "Waiting"}, "nothing: the rollout is not paused"),
    ],
)
def test_effect_says_what_the_operator_will_do(
    kind: CommandKind, make: str, status: dict[str, object], expected: str
) -> None:
    assert effect(kind, canary_in(make, **status)).startswith(expected)
