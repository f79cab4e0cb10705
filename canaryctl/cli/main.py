"""``canaryctl`` and ``kubectl canary``: one CLI, one sub-command module each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from canaryctl import __version__
from canaryctl.cli import lint_cmd
from canaryctl.loadtester import cli as loadtester_cmd


def _version(_: argparse.Namespace) -> int:
    print(f"canaryctl {__version__}")
    return 0


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Progressive delivery for Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    lint_cmd.add_parser(subparsers)
    loadtester_cmd.add_parser(subparsers)
    version = subparsers.add_parser("version", help="print the canaryctl version")
    version.set_defaults(func=_version)
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
