"""``canaryctl loadtester``: argparse wiring, kept apart so the main CLI only calls add_parser/run."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from canaryctl.loadtester.auth import Authenticator, TokenHashes
from canaryctl.loadtester.server import DEFAULT_COMMANDS, DEFAULT_MAX_PER_NAMESPACE, Policy, serve
from canaryctl_mesh.duration import parse_duration

MAX_PER_NAMESPACE_LIMIT = 1000


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _names(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _per_namespace(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if not 1 <= value <= MAX_PER_NAMESPACE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PER_NAMESPACE_LIMIT}, not {value}")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--namespaces",
        type=_names,
        default=frozenset(),
        help="comma-separated namespaces whose canaries may use this load tester (default: all)",
    )
    parser.add_argument(
        "--timeout", type=_duration, default="1h", help="longest a command may run, Go duration (default 1h)"
    )
    parser.add_argument(
        "--allow-commands",
        type=_names,
        default=frozenset(DEFAULT_COMMANDS),
        metavar="NAMES",
        help="comma-separated executables type cmd may run, and that helm/kubectl tasks need "
        f"(default: {','.join(DEFAULT_COMMANDS)}; empty: none)",
    )
    parser.add_argument(
        "--allow-bash",
        action="store_true",
        help="run type: bash tasks (any shell command; off by default)",
    )
    parser.add_argument(
        "--max-per-namespace",
        type=_per_namespace,
        default=DEFAULT_MAX_PER_NAMESPACE,
        metavar="N",
        help="commands one namespace may run at once; more are answered 429 (default: %(default)s)",
    )
    auth = parser.add_argument_group(
        "authentication", "with either on, every command and gate needs 'Authorization: Bearer <token>'"
    )
    auth.add_argument(
        "--token-hashes",
        type=Path,
        default=None,
        metavar="DIR",
        help="one file per namespace, named after it, holding the SHA-256 (hex) of its token",
    )
    auth.add_argument(
        "--token-review",
        action="store_true",
        help="accept Kubernetes ServiceAccount tokens, checked with the TokenReview API",
    )
    auth.add_argument(
        "--token-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="audience a ServiceAccount token must be issued for (repeatable; default: the API server's)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``loadtester`` sub-command to the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "loadtester",
        help="run the Flagger-compatible load tester service",
        description="Runs allowed webhook commands (hey, curl, ...) and manual gates for canaries, "
        "Flagger's API.",
    )
    return _configure(parser)


def policy(args: argparse.Namespace) -> Policy:
    """The load tester's policy from parsed flags; reads the token files now, so bad ones fail at start."""
    authenticators: list[Authenticator] = []
    if args.token_hashes is not None:
        authenticators.append(TokenHashes(args.token_hashes))
    if args.token_review:
        from canaryctl.loadtester.token_review import in_cluster_reviewer  # imports kubernetes: only here

        authenticators.append(in_cluster_reviewer(args.token_audience))
    return Policy(
        namespaces=args.namespaces,
        timeout=args.timeout,
        allow_commands=args.allow_commands,
        allow_bash=args.allow_bash,
        max_per_namespace=args.max_per_namespace,
        authenticators=tuple(authenticators),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        configured = policy(args)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).error("cannot start the load tester: %s", exc)
        return 2
    asyncio.run(serve(args.host, args.port, configured))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m canaryctl.loadtester``) for the load tester's own image."""
    parser = _configure(argparse.ArgumentParser(prog="canaryctl-loadtester"))
    return run(parser.parse_args(argv))
