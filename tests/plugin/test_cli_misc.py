"""lint -f, lazy sub-command modules, and the pieces of rendering golden files do not pin: durations,
and when --watch counts a rollout as done."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from canaryctl.api.models import Canary
from canaryctl.cli.main import COMMANDS as COMMAND_TABLE
from canaryctl.cli.main import build_parser, main, overview_parser
from canaryctl.cli.render import duration, status_view, time_left
from canaryctl.cli.status_cmd import outcome
from canaryctl.cli.view import StatusView
from canaryctl.engine.clock import from_rfc3339
from canaryctl.terminal import Look, Screen
from tests.plugin import scenarios

COMMANDS = ("status", "list", "promote", "abort", "retry", "pause", "resume", "skip", "lint", "convert")
FLAGGER = Path(__file__).parents[1] / "api" / "manifests" / "flagger"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return set(_subparsers(parser).choices)


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    return {choice.dest: choice.help for choice in _subparsers(parser)._choices_actions}


def test_each_command_loads_only_its_own_module() -> None:
    aliases = {alias for command in COMMAND_TABLE.values() for alias in command.aliases}
    assert _subcommands(build_parser("canaryctl")) == {*COMMAND_TABLE, *aliases, "version", "completion"}
    for command in COMMAND_TABLE:
        assert command in _subcommands(build_parser("canaryctl", command))
    assert {"status", "get"} <= _subcommands(build_parser("canaryctl", "get"))  # kubectl's verb
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


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (["report", "web", "--prometheus", "http://127.0.0.1:9"], "plotly", "report"),
        (["dashboard", "--port", "0"], "aiohttp", "dashboard"),
    ],
)
def test_a_command_whose_extra_is_missing_says_what_to_install(
    argv: list[str],
    missing: str,
    extra: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The light install leaves out plotly and aiohttp: one line naming the extra, before any request."""
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: find_spec answers None
    assert main([*argv, "--server", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err == f"kubectl canary: error: this command needs {missing}: pip install 'canaryctl[{extra}]'\n"


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
    view = status_view(
        StatusView(Canary.model_validate(obj)), Look(unicode=False), from_rfc3339(scenarios.NOW)
    )
    text = Screen(io.StringIO()).text(view)
    assert "  -   request-duration      -      max 500  not checked yet" in text


@pytest.mark.parametrize(
    ("argv", "dest", "seconds"),
    [
        (["status", "x", "--timeout", "1m30s"], "timeout", 90.0),
        (["local", "run", "c.yaml", "--primary", "p", "--canary", "c", "--timeout", "2m"], "timeout", 120.0),
        (["report", "x", "--prometheus", "http://p", "--since", "2h"], "since", 7200.0),
        (["demo-app", "--latency", "300ms"], "latency", 0.3),
    ],
)
def test_every_time_flag_takes_a_duration(argv: list[str], dest: str, seconds: float) -> None:
    args = build_parser("canaryctl", argv[0]).parse_args(argv)
    assert getattr(args, dest) == pytest.approx(seconds)


def test_a_time_flag_says_what_a_duration_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser("canaryctl", "demo-app").parse_args(["demo-app", "--latency", "slow"])
    assert "invalid duration 'slow': expected a Go duration such as 30s" in capsys.readouterr().err
