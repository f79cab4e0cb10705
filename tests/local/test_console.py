"""The local run's console: one ASCII line per change in a log, a block redrawn in place on a terminal,
and a fastFail rollback shown as the reason rather than as failed checks."""

from __future__ import annotations

import io
import re
import sys

import pytest

from canaryctl.api.models import Canary
from canaryctl.local.console import Console
from tests.gitops.rollouts import ROLLOUTS
from tests.plugin.terminal import terminal


def canary(stage: str) -> Canary:
    return Canary.model_validate(ROLLOUTS[stage]())


def test_a_log_gets_one_ascii_line_per_change() -> None:
    out = io.StringIO()
    console = Console(out, extra=lambda: ["  ✉ slack: Canary podinfo.test advanced"])
    for stage in ("progressing", "progressing", "succeeded"):
        console.show(canary(stage))
    console.event("Promotion completed! Scaling down podinfo.test", warning=False)
    console.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, "an unchanged status is not printed again"
    assert out.getvalue().isascii()
    assert lines[0].startswith(
        "Progressing  podinfo.test  Step 4/8: analysis x 1 | canary [##########..........]"
    )
    assert "| ok request-success-rate: 100.00 >= 99 |" in lines[0]
    assert lines[0].endswith("| mail slack: Canary podinfo.test advanced")
    assert re.fullmatch(r"\d\d:\d\d:\d\d Promotion completed! Scaling down podinfo.test", lines[2])


def test_fast_fail_is_the_reason_not_failed_checks() -> None:
    out = io.StringIO()
    Console(out).show(canary("fast-failed"))
    line = out.getvalue()
    assert "fastFail: canary error rate 40.0% over 100 requests exceeds 10%" in line
    assert "rolled back by fastFail (not by failed checks)" in line
    assert "failed checks 0/" not in line
    out = io.StringIO()
    Console(out).show(canary("failed"))
    assert "failed checks 2/2" in out.getvalue()


def test_a_terminal_gets_a_block_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    with terminal(monkeypatch) as captured:
        console = Console(sys.stdout)
        console.show(canary("progressing"))
        console.event("Advance podinfo.test canary weight 50", warning=False)
        console.show(canary("succeeded"))
        console.close()
    out = captured.text
    assert "\x1b[2K" in out, "the block is erased and redrawn"
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out)
    assert "◐ Progressing  podinfo.test" in plain and "✔ Succeeded  podinfo.test" in plain
    assert "█" in plain and "✔ request-success-rate: 100.00 >= 99" in plain
    assert "Advance podinfo.test canary weight 50" in plain
