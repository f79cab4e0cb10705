"""``kubectl canary dashboard``: a local web UI of the Canaries, served by the plugin like Argo Rollouts'
dashboard: by namespace, each with its phase, weight, step, metric values against their thresholds,
webhook results and events, updated live from the API watch, and the control verbs behind a
confirmation."""

from __future__ import annotations

import argparse
import asyncio

from canaryctl.cli.kube import (
    Subparsers,
    add_command,
    add_connection_flags,
    connect,
    namespace_of,
    require_extra,
)

DEFAULT_PORT = 3100


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve a live web UI of the Canaries with the control verbs",
        description="Serve a web UI of the Canaries on http://127.0.0.1:PORT/ (loopback only), updated "
        "live from the API, with promote, pause, resume, retry and abort behind a confirmation.",
    )
    add_connection_flags(parser, all_namespaces=True)
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})"
    )
    add_command(parser, run)
    parser.set_defaults(func=serve_until_interrupted)


def serve_until_interrupted(args: argparse.Namespace) -> int:
    """Ctrl+C stops the server; that is how a dashboard ends, not an error."""
    try:
        code: int = asyncio.run(args.afunc(args))
        return code
    except KeyboardInterrupt:
        return 0


async def run(args: argparse.Namespace) -> int:
    require_extra("dashboard", {"aiohttp": "aiohttp"})
    from canaryctl.cli.dashboard.server import serving

    namespace = None if args.all_namespaces else namespace_of(args)
    with connect(args) as objects:
        async with serving(objects, namespace, args.port) as dashboard:
            where = "all namespaces" if namespace is None else f"namespace {namespace}"
            print(f"canaryctl dashboard for {where}: {dashboard.url} (Ctrl+C to stop)", flush=True)
            await asyncio.Event().wait()
    return 0
