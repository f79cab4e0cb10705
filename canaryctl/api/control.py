"""Manual control of a rollout through one annotation, written by ``kubectl canary`` and read by the
operator: ``canaryctl.dev/command: <kind>/<id>``.

The id makes a command idempotent: the engine records the last id it acted on in
``status.lastHandledCommand``, so a command stays on the object harmlessly until the next one
replaces it. No spec change is needed to retry or promote.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

COMMAND_ANNOTATION: Final = "canaryctl.dev/command"


class CommandKind(StrEnum):
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"
    PAUSE = "pause"
    RESUME = "resume"
    SKIP = "skip"


def encode_command(kind: CommandKind, command_id: str) -> str:
    if "/" in command_id or not command_id:
        raise ValueError(f"command id {command_id!r} must be non-empty and contain no '/'")
    return f"{kind.value}/{command_id}"


def decode_command(value: str | None) -> tuple[CommandKind, str] | None:
    """The command in an annotation value; None when absent or not a command canaryctl knows."""
    if not value or "/" not in value:
        return None
    kind, _, command_id = value.partition("/")
    try:
        return CommandKind(kind), command_id
    except ValueError:
        return None
