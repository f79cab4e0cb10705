"""``canaryctl`` and ``kubectl canary``: one CLI, one sub-command module each.

Start-up time is the plugin's first impression, so nothing is imported before it is needed: the
overview (``--help``, ``--version``, a mistyped command) comes from the table below alone, and a
command imports only its own module: ``kubectl canary list`` loads neither kopf, the mesh nor the
Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # registers the sub-command with add_parser(subparsers)
    help: str  # its line in the overview; the module registers the same line (tested)
    aliases: tuple[str, ...] = ()  # other names the module registers for it


_CONTROL = "canaryctl.cli.control_cmd"
_STATUS = "canaryctl.cli.status_cmd"

# Each sub-command in the order help lists them.
COMMANDS: dict[str, Command] = {
    "status": Command(_STATUS, "where a rollout is, why, and what happens next", ("get",)),
    "list": Command(_STATUS, "list Canaries with phase, weight and step"),
    "promote": Command(_CONTROL, "end the current pause or analysis step (--full: promote now)"),
    "abort": Command(_CONTROL, "roll back: all traffic to the primary, canary scaled to zero"),
    "retry": Command(_CONTROL, "restart a Failed rollout of the same revision"),
    "pause": Command(_CONTROL, "hold the rollout at its current step"),
    "resume": Command(_CONTROL, "continue a paused rollout"),
    "skip": Command(_CONTROL, "skip the analysis of this revision and promote it"),
    "dashboard": Command(
        "canaryctl.cli.dashboard", "serve a live web UI of the Canaries with the control verbs"
    ),
    "report": Command(
        "canaryctl.cli.report_cmd",
        "write an HTML report of a rollout from Prometheus and the Canary's events",
    ),
    "lint": Command(
        "canaryctl.cli.lint_cmd", "validate Canary, MetricTemplate and AlertProvider manifests offline"
    ),
    "convert": Command("canaryctl.cli.convert_cmd", "convert Flagger manifests to canaryctl ones"),
    "loadtester": Command("canaryctl.loadtester.cli", "run the Flagger-compatible load tester service"),
    "local": Command("canaryctl.local.cli", "run a canary on this machine, without a cluster"),
    "meshd": Command("canaryctl_mesh.meshd.cli", "run the included mesh's control plane or sidecar injector"),
    "operator": Command("canaryctl.operator.cli", "run the Kubernetes operator"),
    "demo-app": Command("canaryctl.demo.app", "serve the versioned demo app"),
    "demo": Command("canaryctl.demo.run", "run a whole canary locally with real traffic"),
}
COMPLETION = Command("canaryctl.cli.completion_cmd", "print a shell completion script")
VERSION_HELP = "print the canaryctl version"
DESCRIPTION = "Progressive delivery for Kubernetes."


class _VersionAction(argparse.Action):
    """``--version``: reads the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the canaryctl version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    import canaryctl

    return f"canaryctl {canaryctl.__version__}"


def _version(_: argparse.Namespace) -> int:
    print(version_line())
    return 0


def _root(prog: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    return parser, subparsers


def overview_parser(prog: str) -> argparse.ArgumentParser:
    """Every sub-command's name and line, from the table: for help and errors, importing nothing."""
    parser, subparsers = _root(prog)
    for name, command in COMMANDS.items():
        subparsers.add_parser(name, help=command.help, aliases=command.aliases)
    subparsers.add_parser("version", help=VERSION_HELP)
    subparsers.add_parser("completion", help=COMPLETION.help)
    return parser


def command_named(name: str | None) -> Command | None:
    """The table's entry for a sub-command name or one of its aliases."""
    if name is None:
        return None
    return COMMANDS.get(name) or next((c for c in COMMANDS.values() if name in c.aliases), None)


def build_parser(prog: str, command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command registered by its module, or with ``command``'s alone."""
    parser, subparsers = _root(prog)
    named = command_named(command)
    everything = named is None and command != "version"
    chosen = COMMANDS.values() if everything else [named] if named is not None else []
    for module in dict.fromkeys(c.module for c in chosen):
        importlib.import_module(module).add_parser(subparsers)
    version = subparsers.add_parser("version", help=VERSION_HELP)
    version.set_defaults(func=_version)
    if everything:  # completion last: it lists every sub-command registered before it
        importlib.import_module(COMPLETION.module).add_parser(subparsers)
    return parser


def _prog(argv0: str) -> str:
    """Invoked as kubectl-canary, kubectl shows it as ``kubectl canary``."""
    return "kubectl canary" if argv0.endswith("kubectl-canary") else "canaryctl"


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (kubectl canary completion)
        importlib.import_module(COMPLETION.module).complete_for_shell(_prog(sys.argv[0]))
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments and not arguments[0].startswith("-") else None
    prog = _prog(sys.argv[0])
    if command_named(command) is not None or command in ("version", "completion"):
        parser = build_parser(prog, command)
    else:  # help, --version, no command or a mistyped one: answered from the table
        parser = overview_parser(prog)
    args = parser.parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
