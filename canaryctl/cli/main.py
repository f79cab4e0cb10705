"""``canaryctl`` and ``kubectl canary``: one CLI, one sub-command module each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from canaryctl import __version__
from canaryctl.cli import completion_cmd, control_cmd, convert_cmd, lint_cmd, status_cmd
from canaryctl.demo import app as demo_app
from canaryctl.demo import run as demo_cmd
from canaryctl.loadtester import cli as loadtester_cmd
from canaryctl.local import cli as local_cmd
from canaryctl.meshd import cli as meshd_cmd
from canaryctl.operator import cli as operator_cmd


def _version(_: argparse.Namespace) -> int:
    print(f"canaryctl {__version__}")
    return 0


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Progressive delivery for Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    status_cmd.add_parser(subparsers)
    control_cmd.add_parser(subparsers)
    lint_cmd.add_parser(subparsers)
    convert_cmd.add_parser(subparsers)
    loadtester_cmd.add_parser(subparsers)
    local_cmd.add_parser(subparsers)
    meshd_cmd.add_parser(subparsers)
    operator_cmd.add_parser(subparsers)
    demo_app.add_parser(subparsers)
    demo_cmd.add_parser(subparsers)
    version = subparsers.add_parser("version", help="print the canaryctl version")
    version.set_defaults(func=_version)
    completion_cmd.add_parser(subparsers)  # last: it lists every sub-command registered before it
    return parser


def _prog(argv0: str) -> str:
    """Invoked as kubectl-canary, kubectl shows it as ``kubectl canary``."""
    return "kubectl canary" if argv0.endswith("kubectl-canary") else "canaryctl"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_prog(sys.argv[0]))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
