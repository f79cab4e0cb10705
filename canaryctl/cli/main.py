"""``canaryctl`` and ``kubectl canary``: one CLI, one sub-command module each."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from canaryctl import __version__

# Each sub-command and the module that registers it, in the order help lists them. Only the module of
# the command being run is imported: `kubectl canary status` need not load kopf, the mesh or the demo
# (a second of start-up). Help, completion and an unknown command load them all.
COMMAND_MODULES: dict[str, str] = {
    "status": "canaryctl.cli.status_cmd",
    "get": "canaryctl.cli.status_cmd",  # kubectl's verb; an alias of status
    "list": "canaryctl.cli.status_cmd",
    **dict.fromkeys(("promote", "abort", "retry", "pause", "resume", "skip"), "canaryctl.cli.control_cmd"),
    "lint": "canaryctl.cli.lint_cmd",
    "convert": "canaryctl.cli.convert_cmd",
    "report": "canaryctl.cli.report_cmd",
    "dashboard": "canaryctl.cli.dashboard",
    "loadtester": "canaryctl.loadtester.cli",
    "local": "canaryctl.local.cli",
    "meshd": "canaryctl.meshd.cli",
    "operator": "canaryctl.operator.cli",
    "demo-app": "canaryctl.demo.app",
    "demo": "canaryctl.demo.run",
}
COMPLETION_MODULE = "canaryctl.cli.completion_cmd"


def _version(_: argparse.Namespace) -> int:
    print(f"canaryctl {__version__}")
    return 0


def build_parser(prog: str, command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command, or with ``command``'s alone when it is a known one."""
    parser = argparse.ArgumentParser(prog=prog, description="Progressive delivery for Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    everything = command != "version" and command not in COMMAND_MODULES
    if everything:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    else:
        modules = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else []
    for module in modules:
        importlib.import_module(module).add_parser(subparsers)
    version = subparsers.add_parser("version", help="print the canaryctl version")
    version.set_defaults(func=_version)
    if everything:  # completion last: it lists every sub-command registered before it
        importlib.import_module(COMPLETION_MODULE).add_parser(subparsers)
    return parser


def _prog(argv0: str) -> str:
    """Invoked as kubectl-canary, kubectl shows it as ``kubectl canary``."""
    return "kubectl canary" if argv0.endswith("kubectl-canary") else "canaryctl"


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (kubectl canary completion)
        importlib.import_module(COMPLETION_MODULE).complete_for_shell(_prog(sys.argv[0]))
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments and not arguments[0].startswith("-") else None
    args = build_parser(_prog(sys.argv[0]), command).parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
