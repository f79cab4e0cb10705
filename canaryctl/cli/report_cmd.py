"""``kubectl canary report NAME --prometheus URL``: the HTML report of a cluster rollout.

The Canary's Events give the steps and the verdicts; Prometheus gives, over the same time, the weight and
the last value of each analysis metric as the controller exported them (``canaryctl_canary_weight``,
``canaryctl_canary_metric_analysis``), and each version's request and 5xx rate from the mesh's own
counters (the builtin queries of ``spec.provider``, the data fastFail judges). Events live an hour by
default in Kubernetes, so report soon after a rollout (or pass ``--since``).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canaryctl.api.models import Canary, CanaryStatus
from canaryctl.cli.kube import (
    API_ERRORS,
    CommandError,
    Subparsers,
    add_command,
    add_connection_flags,
    connect,
    describe_failure,
    get_canary,
    namespace_of,
    require_extra,
)
from canaryctl.cli.view import Event, events
from canaryctl.engine.clock import from_rfc3339
from canaryctl.report.history import CANARY, PRIMARY, History, Marker, MarkerKind, Series
from canaryctl_mesh.duration import duration_arg, format_duration, parse_duration

if TYPE_CHECKING:
    import httpx

# The report's own dependencies (the ``report`` extra), imported only when a report is written.
NEEDED = {"plotly": "plotly", "httpx": "httpx", "canaryctl_providers": "the built-in providers"}
MAX_POINTS = 300  # per series; the step grows with the time range
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # 300 points of a few series are kilobytes
QUERY_TIMEOUT_SECONDS = 30.0
DEFAULT_WINDOW = "1m"
NEW_REVISION = "New revision detected"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of a rollout from Prometheus and the Canary's events",
        description="Write a self-contained HTML report (plotly) of the Canary's last rollout: each "
        "version's traffic and error rate, the weights, steps and verdicts, and each metric against "
        "its threshold.",
    )
    parser.add_argument("name", metavar="NAME", help="Canary name")
    add_connection_flags(parser)
    parser.add_argument("--prometheus", required=True, help="Prometheus URL, e.g. http://localhost:9090")
    parser.add_argument(
        "--since", type=duration_arg, default=None, help="report this far back (default: the last rollout)"
    )
    parser.add_argument("-f", "--file", type=Path, default=None, help="where to write (default NAME.html)")
    parser.add_argument("--now", help=argparse.SUPPRESS)  # RFC 3339; fixes the end of the report
    add_command(parser, run)


def classify(event: Event) -> MarkerKind:
    """Events keep Flagger's wording; the first words tell what happened."""
    if event.message.startswith("Canary failed!"):
        return MarkerKind.ROLLED_BACK
    if event.message.startswith("Promotion completed!"):
        return MarkerKind.PROMOTED
    if event.type == "Warning":
        return MarkerKind.FAIL
    if event.message.startswith((NEW_REVISION, "Advance", "Starting")):
        return MarkerKind.STEP
    return MarkerKind.EVENT


def time_range(found: tuple[Event, ...], since: float | None, now: datetime) -> tuple[datetime, datetime]:
    """From the start of the last rollout (or ``--since``) to its last event, a minute on each side."""
    if since is not None:
        return now - timedelta(seconds=since), now
    times = [from_rfc3339(e.time) for e in found if e.time]
    starts = [from_rfc3339(e.time) for e in found if e.time and e.message.startswith(NEW_REVISION)]
    if not times:
        return now - timedelta(hours=1), now
    start = (max(starts) if starts else min(times)) - timedelta(minutes=1)
    return start, min(now, max(times) + timedelta(minutes=1))


class Prometheus:
    """Range queries against one Prometheus over one time range."""

    def __init__(self, url: str, start: datetime, end: datetime) -> None:
        self.url = url.rstrip("/")
        self.start, self.end = start, end
        self.step = max(1, math.ceil((end - start).total_seconds() / MAX_POINTS))

    def series(
        self, client: httpx.Client, query: str
    ) -> list[tuple[dict[str, str], list[tuple[datetime, float]]]]:
        params = {
            "query": query,
            "start": f"{self.start.timestamp():.3f}",
            "end": f"{self.end.timestamp():.3f}",
            "step": f"{self.step}s",
        }
        import httpx

        try:
            with client.stream("GET", f"{self.url}/api/v1/query_range", params=params) as answer:
                raw = bytearray()
                for chunk in answer.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise CommandError(
                            f"prometheus {self.url}: answer larger than {MAX_ANSWER_BYTES} bytes"
                        )
            body: dict[str, Any] = json.loads(raw)
            if body.get("status") != "success":
                error = body.get("error") or answer.status_code
                raise CommandError(f"prometheus {self.url}: {error} ({query})")
            return [_series(result) for result in body["data"]["result"]]
        except httpx.HTTPError as exc:
            raise CommandError(f"prometheus {self.url}: {exc}") from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, or not a matrix
            raise CommandError(f"prometheus {self.url}: not a range query answer: {exc!r}") from exc

    def one(self, client: httpx.Client, query: str, name: str, scale: float = 1.0) -> Series:
        found = self.series(client, query)
        points = found[0][1] if found else []
        return Series(name, [(t, v * scale if math.isfinite(v) else None) for t, v in points])


def _series(result: dict[str, Any]) -> tuple[dict[str, str], list[tuple[datetime, float]]]:
    values = result.get("values") or []
    return dict(result.get("metric") or {}), [
        (datetime.fromtimestamp(float(t), UTC), float(v)) for t, v in values
    ]


def gather(canary: Canary, found: tuple[Event, ...], prometheus: Prometheus) -> History:
    import httpx

    from canaryctl_providers.metrics.builtin import mesh_queries
    from canaryctl_providers.metrics.template import TemplateModel, render

    namespace = canary.metadata.namespace or "default"
    analysis = canary.spec.effective_analysis
    window = analysis.fast_fail.period if analysis.fast_fail else DEFAULT_WINDOW
    seconds = max(1.0, parse_duration(window))
    queries = mesh_queries(canary.spec.provider).upstream
    history = History(
        canary,
        source=f"Prometheus at {prometheus.url} (every {prometheus.step}s) and the Canary's Events",
        error_window=format_duration(seconds) + (" (the fastFail period)" if analysis.fast_fail else ""),
    )
    with httpx.Client(timeout=QUERY_TIMEOUT_SECONDS) as client:
        for side in (PRIMARY, CANARY):
            model = TemplateModel.for_canary(canary, format_duration(seconds), primary=side == PRIMARY)
            model = queries.model_for(model)
            requests = render(queries.requests, model)
            history.requests[side] = prometheus.one(client, requests, f"{side} requests/s", 1 / seconds)
            success = render(queries.success_rate, model)
            history.errors[side] = prometheus.one(client, f"100 - ({success})", f"{side} 5xx %")
        target = canary.spec.target_ref.name
        weight = f'canaryctl_canary_weight{{namespace="{namespace}", workload="{target}"}}'
        history.weights = [prometheus.one(client, weight, "canary weight (%)")]
        for metric in analysis.metrics or []:
            value = (
                f'canaryctl_canary_metric_analysis{{name="{canary.metadata.name}", namespace="{namespace}", '
                f'metric="{metric.name}"}}'
            )
            history.metrics[metric.name] = prometheus.one(client, value, metric.name)
    history.markers = [
        Marker(from_rfc3339(e.time), classify(e), e.message)
        for e in found
        if e.time and prometheus.start <= from_rfc3339(e.time) <= prometheus.end
    ]
    return history


async def run(args: argparse.Namespace) -> int:
    require_extra("report", NEEDED)
    namespace = namespace_of(args)
    now = from_rfc3339(args.now) if args.now else datetime.now(UTC)
    with connect(args) as objects:
        canary = await get_canary(objects, namespace, args.name)
        try:
            found = await events(objects, canary, last=None)
        except API_ERRORS as exc:
            raise describe_failure(f"events of canary {namespace}/{args.name}", exc) from exc
    start, end = time_range(found, args.since, now)
    history = gather(canary, found, Prometheus(args.prometheus, start, end))
    from canaryctl.report.html import write_report  # plotly: only when a report is written

    path = write_report(args.file or Path(f"{args.name}.html"), history)
    phase = (canary.status or CanaryStatus()).phase
    print(f"canary {namespace}/{args.name}: {phase.value if phase else 'Pending'}; report {path}")
    return 0
