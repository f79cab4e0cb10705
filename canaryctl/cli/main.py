"""``canaryctl`` and ``kubectl canary``: one CLI, one sub-command module each.

Start-up time is the plugin's first impression, so nothing is imported before it is needed: the
overview (``--help``, ``--version``, a mistyped command) comes from the table below alone, and a
command imports only its own module: ``kubectl canary list`` loads neither kopf, the mesh nor the
Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # registers the sub-command with add_parser(subparsers)
    help: str  # its line in the overview; the module registers the same line (tested)


_CONTROL = "canaryctl.cli.control_cmd"

# Each sub-command in the order help lists them.
COMMANDS: dict[str, Command] = {
    "status": Command("canaryctl.cli.status_cmd", "where a rollout is, why, and what happens next"),
    "list": Command("canaryctl.cli.status_cmd", "list Canaries with phase, weight and step"),
    "promote": Command(_CONTROL, "end the current pause or analysis step (--full: promote now)"),
    "abort": Command(_CONTROL, "roll back: all traffic to the primary, canary scaled to zero"),
    "retry": Command(_CONTROL, "restart a Failed rollout of the same revision"),
    "pause": Command(_CONTROL, "hold the rollout at its current step"),
    "resume": Command(_CONTROL, "continue a paused rollout"),
    "skip": Command(_CONTROL, "skip the analysis of this revision and promote it"),
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
        subparsers.add_parser(name, help=command.help)
    subparsers.add_parser("version", help=VERSION_HELP)
    subparsers.add_parser("completion", help=COMPLETION.help)
    return parser


def build_parser(prog: str, command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command registered by its module, or with ``command``'s alone."""
    parser, subparsers = _root(prog)
    everything = command not in COMMANDS and command != "version"
    chosen = COMMANDS.values() if everything else [COMMANDS[command]] if command in COMMANDS else []
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments and not arguments[0].startswith("-") else None
    prog = _prog(sys.argv[0])
    if command in COMMANDS or command in ("version", "completion"):
        parser = build_parser(prog, command)
    else:  # help, --version, no command or a mistyped one: answered from the table
        parser = overview_parser(prog)
    args = parser.parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
