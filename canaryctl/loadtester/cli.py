"""``canaryctl loadtester``: argparse wiring, kept apart so the main CLI only calls add_parser/run."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from canaryctl.api.duration import parse_duration
from canaryctl.loadtester.server import serve


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--namespaces",
        default="",
        help="comma-separated namespaces whose canaries may use this load tester (default: all)",
    )
    parser.add_argument(
        "--timeout", type=_duration, default="1h", help="longest a command may run, Go duration (default 1h)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``loadtester`` sub-command to the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "loadtester",
        help="run the Flagger-compatible load tester service",
        description="Runs webhook commands (hey, bash) and manual gates for canaries, Flagger's API.",
    )
    return _configure(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    asyncio.run(serve(args.host, args.port, namespaces, args.timeout))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m canaryctl.loadtester``) for the load tester's own image."""
    parser = _configure(argparse.ArgumentParser(prog="canaryctl-loadtester"))
    return run(parser.parse_args(argv))
