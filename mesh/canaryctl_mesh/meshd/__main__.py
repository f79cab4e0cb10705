"""``canaryctl-meshd`` (or ``python -m canaryctl_mesh.meshd``): the mesh's control plane or injector
without canaryctl, the same sub-commands as ``canaryctl meshd``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from canaryctl_mesh.meshd import cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="canaryctl-meshd", add_help=False)
    commands = parser.add_subparsers(dest="command")
    cli.add_parser(commands)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] != ["meshd"]:  # `canaryctl meshd ...` arguments (the chart's) work unchanged
        arguments.insert(0, "meshd")
    args = parser.parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
