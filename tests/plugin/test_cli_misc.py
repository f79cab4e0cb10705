"""completion, lint -f, and the pieces of rendering golden files do not pin: terminal style, durations,
and when --watch counts a rollout as done."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from canaryctl.api.models import Canary
from canaryctl.cli.main import COMMANDS as COMMAND_TABLE
from canaryctl.cli.main import build_parser, main, overview_parser
from canaryctl.cli.render import Style, duration, status_text, time_left
from canaryctl.cli.status_cmd import outcome
from canaryctl.cli.view import StatusView
from canaryctl.engine.clock import from_rfc3339
from tests.plugin import scenarios

COMMANDS = ("status", "list", "promote", "abort", "retry", "pause", "resume", "skip", "lint", "convert")
FLAGGER = Path(__file__).parents[1] / "api" / "manifests" / "flagger"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_lists_the_subcommands(capsys: pytest.CaptureFixture[str], shell: str) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert all(f" {command} " in script or f"{command})" in script for command in COMMANDS)
    assert "complete -F _kubectl_canary kubectl-canary canaryctl" in script
    assert 'status) opts="-h --help -n --namespace' in script and "--watch" in script and "--until" in script
    assert "--poll-interval" not in script  # hidden flags stay hidden
    if shell == "zsh":
        assert script.startswith("#compdef kubectl-canary canaryctl\n")
    bash = shutil.which("bash")
    if bash is not None and shell == "bash":
        subprocess.run([bash, "-n"], input=script, text=True, check=True)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return set(_subparsers(parser).choices)


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    return {choice.dest: choice.help for choice in _subparsers(parser)._choices_actions}


def test_each_command_loads_only_its_own_module() -> None:
    assert _subcommands(build_parser("canaryctl")) == {*COMMAND_TABLE, "version", "completion"}
    for command in COMMAND_TABLE:
        assert command in _subcommands(build_parser("canaryctl", command))
    # What a user feels as start-up time: `kubectl canary status` imports neither the operator's kopf
    # nor the official Kubernetes client (most of a second each).
    heavy = ("kopf", "kubernetes", "canaryctl_mesh.ads", "canaryctl.demo.run", "canaryctl_providers")
    probe = "import sys; from canaryctl.cli.main import build_parser; build_parser('k', 'status'); "
    probe += f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_overview_lists_what_each_module_registers_without_importing_any() -> None:
    assert _help_lines(overview_parser("canaryctl")) == _help_lines(build_parser("canaryctl"))
    probe = "import sys\nfrom canaryctl.cli.main import main\ntry:\n    main(['--help'])\n"
    probe += (
        "except SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.startswith('canaryctl')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "list Canaries with phase, weight and step" in loaded.stdout
    assert loaded.stdout.splitlines()[-1] == "['canaryctl', 'canaryctl.cli', 'canaryctl.cli.main']"


def test_version_from_the_installed_metadata() -> None:
    from importlib.metadata import version

    for argv in (["-m", "canaryctl", "--version"], ["-m", "canaryctl", "version"]):
        shown = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, check=True, timeout=60
        )
        assert shown.stdout == f"canaryctl {version('canaryctl')}\n"
    mistyped = subprocess.run(
        [sys.executable, "-m", "canaryctl", "stauts"], capture_output=True, text=True, timeout=60
    )
    assert mistyped.returncode == 2 and "invalid choice: 'stauts'" in mistyped.stderr


def test_lint_takes_f_and_positional_files(capsys: pytest.CaptureFixture[str]) -> None:
    blue_green, ab = str(FLAGGER / "blue-green.yaml"), str(FLAGGER / "ab-testing.yaml")
    assert main(["lint", "-f", blue_green, "-f", ab, "-o", "json"]) == 1  # Flagger apiVersion: an error
    both = capsys.readouterr().out
    assert main(["lint", blue_green, ab, "-o", "json"]) == 1
    assert capsys.readouterr().out == both
    assert main(["lint"]) == 2
    assert "no files given" in capsys.readouterr().err


def test_rich_style_on_a_terminal() -> None:
    canary = Canary.model_validate(scenarios.failed()[0])
    text = status_text(StatusView(canary), Style(rich=True), from_rfc3339(scenarios.NOW))
    assert "\x1b[31m✖ Failed\x1b[0m" in text
    assert "\x1b[31m✖\x1b[0m  request-duration" in text
    assert "\x1b[32m✔\x1b[0m  request-success-rate" in text
    assert "└── " in text
    plain = status_text(StatusView(canary), Style(rich=False), from_rfc3339(scenarios.NOW))
    assert "FAIL  request-duration" in plain and plain.isascii()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.2, "43s"), (60, "1m"), (200, "3m20s"), (3600, "1h"), (3900, "1h5m"), (93600, "1d2h")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_time_left_counts_down_with_the_clock() -> None:
    canary = Canary.model_validate(scenarios.progressing()[0])
    now = from_rfc3339(scenarios.NOW)
    assert time_left(canary, now) == "next check in 40s (interval 1m)"
    assert time_left(canary, now + timedelta(seconds=39)) == "next check in 1s (interval 1m)"
    assert time_left(canary, now + timedelta(seconds=41)) == "next check due now (interval 1m)"


def test_until_paused_counts_a_pause_step_waiting_for_promote() -> None:
    canary = Canary.model_validate(scenarios.paused("held", by_user=False)[0])
    assert canary.status is not None
    assert outcome(canary, "paused", revision_pending=False) is None  # a timed pause ends on its own
    canary.status.current_step = 5  # `pause: {}`
    assert outcome(canary, "paused", revision_pending=False) == 0
    assert outcome(canary, "succeeded", revision_pending=False) is None
    canary.status.phase = None
    assert outcome(canary, "paused", revision_pending=False) is None


def test_metrics_not_checked_yet_are_listed_with_their_thresholds() -> None:
    obj = scenarios.progressing()[0]
    obj["status"]["metrics"] = obj["status"]["metrics"][:1]
    text = status_text(StatusView(Canary.model_validate(obj)), Style(rich=False), from_rfc3339(scenarios.NOW))
    assert "  -   request-duration      -      max 500  not checked yet" in text
