"""``kubectl canary status NAME [--watch]`` (alias ``get``) and ``kubectl canary list``.

``status --watch`` polls until the rollout reaches the ``--until`` state and exits like a CI step:

- 0: ``--until`` reached. ``succeeded`` (default): phase Succeeded. ``promoted``: the canary is being or
  has been copied to the primary (Promoting, Finalising, Succeeded). ``paused``: the rollout waits for a
  person (paused by user, a pause step without duration, WaitingPromotion) or already Succeeded.
  ``failed``: phase Failed.
- 1: the rollout failed (or, with ``--until failed``, succeeded); also any error reading the Canary.
- 2: ``--timeout`` passed first.

A Succeeded/Failed Canary whose target already has a new revision the operator has not picked up yet
does not end the watch, so ``kubectl apply && kubectl canary status --watch`` waits for the new rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from rich.live import Live

from canaryctl.api.models import Canary, CanaryStatus, Phase
from canaryctl.cli.kube import (
    PluginObjects,
    Subparsers,
    add_command,
    add_connection_flags,
    add_output_flags,
    connect,
    dump,
    get_canary,
    namespace_of,
    parse_canary,
)
from canaryctl.cli.render import (
    current_step,
    duration,
    headline,
    list_names,
    list_row,
    list_table,
    status_view,
)
from canaryctl.cli.view import StatusView, gather, list_canaries
from canaryctl.engine.clock import from_rfc3339
from canaryctl.engine.steps import StepKind
from canaryctl.terminal import Screen
from canaryctl_mesh.duration import duration_arg

UNTIL = ("succeeded", "failed", "paused", "promoted")
DEFAULT_TIMEOUT = "30m"
POLL_SECONDS = 2.0
EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
TABLE_OUTPUTS = ("wide", "name")


def add_parser(subparsers: Subparsers) -> None:
    status = subparsers.add_parser(
        "status",
        aliases=["get"],
        help="where a rollout is, why, and what happens next",
        description="Show a Canary: phase, step, weights, workloads and pods, analysis, recent events. "
        "--watch redraws until the rollout ends and exits 0 (done), 1 (failed) or 2 (timeout).",
    )
    status.add_argument("name", metavar="NAME", help="Canary name")
    add_connection_flags(status)
    add_output_flags(status)
    status.add_argument("-w", "--watch", action="store_true", help="redraw until the rollout ends")
    status.add_argument(
        "--timeout", type=duration_arg, default=DEFAULT_TIMEOUT, help="give up watching after (default 30m)"
    )
    status.add_argument("--until", choices=UNTIL, default="succeeded", help="state that ends --watch with 0")
    status.add_argument("--poll-interval", type=duration_arg, default=POLL_SECONDS, help=argparse.SUPPRESS)
    status.add_argument("--now", help=argparse.SUPPRESS)  # RFC 3339; fixes the clock (golden tests)
    add_command(status, run_status)

    listing = subparsers.add_parser("list", help="list Canaries with phase, weight and step")
    add_connection_flags(listing, all_namespaces=True)
    add_output_flags(listing, TABLE_OUTPUTS)
    listing.add_argument("-l", "--selector", help="label selector, e.g. app=podinfo,tier!=db")
    listing.add_argument("--no-headers", action="store_true", help="print the table without its header")
    listing.add_argument("--now", help=argparse.SUPPRESS)
    add_command(listing, run_list)


def _clock(args: argparse.Namespace) -> Callable[[], datetime]:
    if args.now:
        fixed = from_rfc3339(args.now)
        return lambda: fixed
    return lambda: datetime.now(UTC)


def outcome(canary: Canary, until: str, revision_pending: bool) -> int | None:
    """The exit status once the watch is over, None while it goes on."""
    status = canary.status or CanaryStatus()
    phase = status.phase
    if revision_pending:
        return None
    if phase is Phase.FAILED:
        return EXIT_DONE if until == "failed" else EXIT_FAILED
    if phase is Phase.SUCCEEDED:
        return EXIT_FAILED if until == "failed" else EXIT_DONE
    if until == "promoted" and phase in (Phase.PROMOTING, Phase.FINALISING):
        return EXIT_DONE
    if until == "paused" and _waits_for_person(canary):
        return EXIT_DONE
    return None


def _waits_for_person(canary: Canary) -> bool:
    status = canary.status or CanaryStatus()
    if status.phase is Phase.WAITING_PROMOTION or (status.paused and status.phase is Phase.PROGRESSING):
        return True
    steps, index = current_step(canary)
    step = steps[index] if status.phase is Phase.PROGRESSING and index < len(steps) else None
    return step is not None and step.kind is StepKind.PAUSE and step.duration is None


async def run_status(args: argparse.Namespace) -> int:
    namespace = namespace_of(args)
    screen, now = Screen(no_color=args.no_color), _clock(args)
    with connect(args) as objects:
        if not args.watch:
            view = await gather(objects, await get_canary(objects, namespace, args.name))
            if args.output:
                print(dump(view.to_data(), args.output))
            else:
                screen.print(status_view(view, screen.look, now()))
            return 0
        with screen.live() as live:
            return await _watch(args, objects, namespace, Watch(screen, live, now, args.output))


async def _watch(args: argparse.Namespace, objects: PluginObjects, namespace: str, watch: Watch) -> int:
    deadline = time.monotonic() + args.timeout
    code: int | None = None
    for _ in range(math.ceil(args.timeout / args.poll_interval) + 1):
        view = await gather(objects, await get_canary(objects, namespace, args.name))
        watch.show(view)
        code = outcome(view.canary, args.until, view.revision_pending)
        remaining = deadline - time.monotonic()
        if code is not None or remaining <= 0:
            break
        await asyncio.sleep(min(args.poll_interval, remaining))
    watch.finish(view)
    if code is None:
        print(
            f"kubectl canary: timed out after {duration(args.timeout)} waiting for {args.until}",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    return code


class Watch:
    """A terminal gets the status redrawn in place; a log gets it once, then one line per change, then
    the final status; ``-o`` gets only the final data."""

    def __init__(
        self, screen: Screen, live: Live | None, now: Callable[[], datetime], output: str | None
    ) -> None:
        self.screen, self.live, self.now, self.output = screen, live, now, output
        self.last_line: str | None = None

    def show(self, view: StatusView) -> None:
        if self.output:
            return
        if self.live is not None:
            self.live.update(status_view(view, self.screen.look, self.now()), refresh=True)
            return
        if self.last_line is None:
            self.screen.print(status_view(view, self.screen.look, self.now()))
            print()
        line = headline(view.canary)
        if line != self.last_line:
            self.screen.print(f"{self.now():%H:%M:%S} {line}", soft_wrap=True)
        self.last_line = line

    def finish(self, view: StatusView) -> None:
        if self.output:
            print(dump(view.to_data(), self.output))
        elif self.live is None:
            print()
            self.screen.print(status_view(view, self.screen.look, self.now()))


async def run_list(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else namespace_of(args)
    with connect(args) as objects:
        found = await list_canaries(objects, namespace, args.selector)
    canaries = [parse_canary(obj, f"canary {_key(obj)}") for obj in found]
    canaries.sort(key=lambda c: (c.metadata.namespace or "", c.metadata.name or ""))
    now = _clock(args)()
    rows = [list_row(canary, now) for canary in canaries]
    if args.output in ("json", "yaml"):
        print(dump({"items": rows}, args.output))
    elif args.output == "name":
        if rows:
            print(list_names(rows))
    elif not rows:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No canaries found in {where}.", file=sys.stderr)
    else:
        table = list_table(rows, wide=args.output == "wide", headers=not args.no_headers)
        Screen(no_color=args.no_color).print(table)
    return 0


def _key(obj: dict[str, object]) -> str:
    meta = obj.get("metadata")
    return f"{meta.get('namespace')}/{meta.get('name')}" if isinstance(meta, dict) else "?"
