"""The control verbs: ``promote [--full]``, ``abort``, ``retry``, ``pause``, ``resume``, ``skip``.

Each writes the ``canaryctl.dev/command: <kind>/<id>`` annotation with a fresh id (the operator acts once
per id; no spec bump is needed) and says what the operator will do with it in the Canary's current
state, so a ``promote`` on a finished rollout does not look like it did something.
"""

from __future__ import annotations

import argparse
import secrets
import time

from canaryctl.api.control import COMMAND_ANNOTATION, CommandKind, encode_command
from canaryctl.api.models import API_VERSION, Canary, CanaryStatus, Phase
from canaryctl.cli.kube import (
    API_ERRORS,
    PluginObjects,
    Subparsers,
    add_command,
    add_connection_flags,
    connect,
    describe_failure,
    get_canary,
    namespace_of,
)
from canaryctl.cli.render import ANALYSING, current_step, step_text
from canaryctl.engine.steps import StepKind
from canaryctl.terminal import Screen

VERBS: dict[str, tuple[CommandKind, str]] = {
    "promote": (CommandKind.PROMOTE, "end the current pause or analysis step (--full: promote now)"),
    "abort": (CommandKind.ABORT, "roll back: all traffic to the primary, canary scaled to zero"),
    "retry": (CommandKind.RETRY, "restart a Failed rollout of the same revision"),
    "pause": (CommandKind.PAUSE, "hold the rollout at its current step"),
    "resume": (CommandKind.RESUME, "continue a paused rollout"),
    "skip": (CommandKind.SKIP, "skip the analysis of this revision and promote it"),
}


def add_parser(subparsers: Subparsers) -> None:
    for verb, (_, summary) in VERBS.items():
        parser = subparsers.add_parser(verb, help=summary, description=f"{summary.capitalize()}.")
        parser.add_argument("name", metavar="NAME", help="Canary name")
        if verb == "promote":
            parser.add_argument("--full", action="store_true", help="skip the remaining steps and promote")
        add_connection_flags(parser)
        parser.set_defaults(verb=verb)
        add_command(parser, run)


def new_command_id() -> str:
    return f"{int(time.time())}-{secrets.token_hex(3)}"


# What a command does to a new revision held by confirm-rollout (engine.machine, idle phases).
_SHIP_UNANALYSED = "the waiting revision is promoted without analysis; the canary never gets traffic"
WHILE_WAITING = {
    CommandKind.ABORT: "the waiting revision is rejected: phase Failed, the canary never starts (retry does)",
    CommandKind.SKIP: _SHIP_UNANALYSED,
    CommandKind.PROMOTE_FULL: _SHIP_UNANALYSED,
    CommandKind.PROMOTE: "the rollout starts now, without waiting for confirm-rollout hooks",
}


def effect(kind: CommandKind, canary: Canary) -> str:
    """What the operator will do with ``kind`` given the Canary's status (mirrors engine.machine)."""
    status = canary.status or CanaryStatus()
    phase = status.phase
    nothing = f"nothing: the canary is {phase.value if phase else 'not initialized yet'}"
    if kind is CommandKind.PAUSE:
        if phase in ANALYSING:
            return "the rollout holds at its current step until `kubectl canary resume`"
        return "no rollout is running; the next one holds at its first step until `kubectl canary resume`"
    if kind is CommandKind.RESUME:
        return "the rollout continues" if status.paused else "nothing: the rollout is not paused"
    if kind is CommandKind.RETRY:
        if phase is Phase.FAILED:
            return "the rollout of the current revision restarts from step 1"
        return f"{nothing}; retry only restarts a Failed rollout"
    if phase is Phase.WAITING:
        return WHILE_WAITING.get(kind, f"{nothing}; the new revision waits for confirm-rollout")
    if phase not in ANALYSING:
        return f"{nothing}; there is no rollout in progress"
    if kind is CommandKind.ABORT:
        return "rollback: all traffic to the primary, the canary scaled to zero, phase Failed"
    if status.paused:
        return "nothing while the rollout is paused: `kubectl canary resume` first"
    if kind in (CommandKind.PROMOTE_FULL, CommandKind.SKIP):
        return "the remaining steps and analysis are skipped and the canary is promoted now"
    return _promote_step(canary)


def _promote_step(canary: Canary) -> str:
    steps, index = current_step(canary)
    if index >= len(steps):
        return "nothing: all steps are done, promotion waits on confirm-promotion hooks; use --full"
    step, following = step_text(canary)
    if steps[index].kind in (StepKind.PAUSE, StepKind.ANALYSIS):
        return f"step {step} ends now; next: {following}"
    if steps[index].kind is StepKind.CONFIRM_PROMOTION:
        return f"nothing: step {step} waits on confirm-promotion hooks; use --full"
    return f"nothing: step {step} completes on its own"


async def request_command(
    objects: PluginObjects, namespace: str, name: str, kind: CommandKind
) -> tuple[str, str]:
    """Writes the command annotation; (its value, what the operator will do with it)."""
    value = encode_command(kind, new_command_id())
    patch = {"metadata": {"annotations": {COMMAND_ANNOTATION: value}}}
    canary = await get_canary(objects, namespace, name)
    try:
        await objects.merge_patch(API_VERSION, "Canary", namespace, name, patch)
    except API_ERRORS as exc:
        raise describe_failure(f"canary {namespace}/{name}", exc) from exc
    return value, effect(kind, canary)


async def run(args: argparse.Namespace) -> int:
    kind, _ = VERBS[args.verb]
    if kind is CommandKind.PROMOTE and args.full:
        kind = CommandKind.PROMOTE_FULL
    namespace = namespace_of(args)
    with connect(args) as objects:
        value, will = await request_command(objects, namespace, args.name, kind)
    Screen().print(
        f"canary {namespace}/{args.name}: {kind.value} requested ({COMMAND_ANNOTATION}={value})\n"
        f"  the operator will: {will}"
    )
    return 0
