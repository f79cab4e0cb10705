"""What ``kubectl canary status`` and ``list`` show, as rich renderables: a header, a tree of workloads and
pods, the analysis and the last events; the list as a table.

``canaryctl.terminal`` decides the look (symbols and colors on a terminal, ASCII in logs). Text from the
cluster (messages, names) is never read as markup. Times are relative to an injected ``now`` so the
output is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from canaryctl.api.models import (
    API_VERSION,
    Canary,
    CanaryMetric,
    CanaryStatus,
    MetricStatus,
    Phase,
    Verdict,
    WebhookStatus,
)
from canaryctl.cli.view import Event, StatusView, Workload
from canaryctl.engine.clock import seconds_since
from canaryctl.engine.machine import fast_fail_reason
from canaryctl.engine.steps import Step, StepKind, Strategy, canary_weights, compile_steps, strategy
from canaryctl.terminal import PENDING_MARK, PHASE_STYLES, Look

LABEL_WIDTH = 15
ANALYSING = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
RESOURCE = f"canary.{API_VERSION.split('/')[0]}"  # kubectl's -o name prefix


# --- time ------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """Compact: 42s, 3m20s, 1h5m, 2d3h."""
    total = max(0, math.ceil(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def age(timestamp: str | None, now: datetime) -> str:
    elapsed = seconds_since(timestamp, now) if timestamp else None
    return "-" if elapsed is None else duration(elapsed)


def current_step(canary: Canary) -> tuple[Sequence[Step], int]:
    steps = compile_steps(canary.spec)
    status = canary.status or CanaryStatus()
    return steps, min(status.current_step, len(steps))


def time_left(canary: Canary, now: datetime) -> str:
    """What the rollout waits for and how long: a timed pause, the next analysis check, or a person."""
    status = canary.status or CanaryStatus()
    if status.phase not in ANALYSING:
        return "-"
    if status.paused:
        return "paused by user (kubectl canary resume)"
    steps, index = current_step(canary)
    step = steps[index] if index < len(steps) else None
    if step is not None and step.kind is StepKind.PAUSE:
        if step.duration is None:
            return "paused until promoted (kubectl canary promote)"
        paused_for = seconds_since(status.step_started_at, now) or 0.0
        return f"{duration(step.duration - paused_for)} of the {duration(step.duration)} pause left"
    interval = canary.spec.effective_analysis.interval_seconds
    started = status.last_analysis_at or status.step_started_at
    elapsed = seconds_since(started, now)
    if elapsed is None or elapsed >= interval:
        return f"next check due now (interval {duration(interval)})"
    return f"next check in {duration(interval - elapsed)} (interval {duration(interval)})"


# --- header ----------------------------------------------------------------------------------------------


def strategy_text(canary: Canary) -> str:
    analysis = canary.spec.effective_analysis
    kind = strategy(analysis)
    interval = f"interval {duration(analysis.interval_seconds)}"
    if kind is Strategy.CANARY:
        weights = ", ".join(str(w) for w in canary_weights(analysis))
        return f"{kind.value}: weights {weights}%, {interval}" + (
            ", mirrored first" if analysis.mirror else ""
        )
    if kind in (Strategy.AB, Strategy.BLUE_GREEN, Strategy.BLUE_GREEN_MIRROR):
        return f"{kind.value}: {analysis.iterations} checks, {interval}"
    return f"{kind.value}: {len(analysis.steps or [])} explicit steps, {interval}"


def step_text(canary: Canary) -> tuple[str, str]:
    """(current step, what comes next)."""
    status = canary.status or CanaryStatus()
    steps, index = current_step(canary)
    if status.phase in (Phase.PROMOTING, Phase.FINALISING):
        return f"{len(steps)}/{len(steps)} done", "promotion: copy the canary to the primary"
    if status.phase not in ANALYSING:
        return "-", "a new revision of the target starts a rollout"
    if index >= len(steps):
        return f"{len(steps)}/{len(steps)} done", "promotion (after confirm-promotion hooks pass)"
    following = steps[index + 1].describe() if index + 1 < len(steps) else "promotion"
    return f"{index + 1}/{len(steps)} {steps[index].describe()}", following


def weight_text(view: StatusView, look: Look) -> Text:
    status = view.canary.status or CanaryStatus()
    text = Text.assemble(look.bar(status.canary_weight), f" {status.canary_weight}% canary")
    if status.header_route:
        text.append(", matching requests to canary")
    observed = view.observed
    if observed is None or observed.weight is None:
        detail = observed.source if observed else "not read"
        return text.append(f" (router: {detail}; showing the status weight)")
    if observed.weight != status.canary_weight:
        return text.append_text(
            Text.assemble(
                " (router: ", (f"{observed.weight}%", "yellow"), f" in {observed.source}, updating)"
            )
        )
    return text.append(f" (router: {observed.weight}% in {observed.source})")


def fault_text(status: CanaryStatus) -> str:
    fault = status.fault
    if fault is None:
        return "none"
    parts = []
    if fault.abort is not None:
        parts.append(f"abort HTTP {fault.abort.http_status} on {fault.abort.percentage:g}%")
    if fault.delay is not None:
        parts.append(f"delay {fault.delay.fixed_delay} on {fault.delay.percentage:g}%")
    return ", ".join(parts) + " of canary requests"


def failed_checks_text(canary: Canary) -> Text:
    """``1/5``; after a fastFail rollback it says that failed checks were not the cause."""
    status = canary.status or CanaryStatus()
    counted = f"{status.failed_checks}/{canary.spec.effective_analysis.failure_threshold}"
    if fast_fail_reason(status) is not None:
        return Text(f"{counted} (not the cause: fastFail rolled the canary back)")
    return Text(counted, style="red" if status.failed_checks else "")


def _images(workloads: Sequence[Workload]) -> list[str]:
    width = max((len(w.role) for w in workloads), default=0)
    return [f"{w.role.ljust(width)}  {', '.join(w.images) or '-'}" for w in workloads if w.found]


def header(view: StatusView, look: Look, now: datetime) -> Table:
    canary = view.canary
    status = canary.status or CanaryStatus()
    step, following = step_text(canary)
    rows: list[tuple[str, str | Text]] = [
        ("Name", canary.metadata.name or ""),
        ("Namespace", canary.metadata.namespace or ""),
        ("Status", look.phase(status.phase)),
        ("Message", status.message or "-"),
    ]
    if view.revision_pending:
        rows.append(("Revision", Text("new revision detected, waiting for the operator", style="yellow")))
    rows += [
        ("Strategy", strategy_text(canary)),
        ("Step", step),
        ("Next", following),
        ("Time left", time_left(canary, now)),
        ("Weight", weight_text(view, look)),
        ("Mirror", f"{status.mirror_weight}%"),
        ("Fault", fault_text(status)),
        ("Failed checks", failed_checks_text(canary)),
    ]
    rows += [("Images" if i == 0 else "", line) for i, line in enumerate(_images(view.workloads))]
    table = Table.grid()
    table.add_column(min_width=LABEL_WIDTH, no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(f"{label}:" if label else "", Text(value) if isinstance(value, str) else value)
    return table


# --- tree, analysis, events -----------------------------------------------------------------------------


def _workload_line(workload: Workload) -> Text:
    line = Text(f"{workload.kind} {workload.name} ({workload.role})  ")
    if not workload.found:
        return line.append("not found", style="red")
    healthy = workload.ready >= workload.desired > 0
    return line.append(f"{workload.ready}/{workload.desired} ready", style="green" if healthy else "yellow")


def tree(view: StatusView) -> Tree:
    canary = view.canary
    root = Tree(Text(f"Canary {canary.metadata.name}"))
    if not view.workloads:
        target = canary.spec.target_ref
        root.add(Text(f"{target.kind.value} {target.name} (traffic only, no pods)"))
        return root
    for workload in view.workloads:
        branch = root.add(_workload_line(workload))
        for pod in workload.pods:
            restarts = f"  {pod.restarts} restart{'s' if pod.restarts > 1 else ''}" if pod.restarts else ""
            branch.add(Text(f"pod {pod.name}  {pod.phase}  {pod.ready} ready{restarts}"))
    return root


def _bounds(low: float | None, high: float | None) -> str:
    parts = ([f"min {low:g}"] if low is not None else []) + ([f"max {high:g}"] if high is not None else [])
    return " ".join(parts) or "no threshold"


def _spec_metrics(canary: Canary) -> list[CanaryMetric]:
    steps, index = current_step(canary)
    step = steps[index] if index < len(steps) else None
    if step is not None and step.metrics is not None:
        return list(step.metrics)
    return list(canary.spec.effective_analysis.metrics or [])


def analysis(view: StatusView, look: Look, now: datetime) -> Group:
    canary = view.canary
    status = canary.status or CanaryStatus()
    seen = {m.name for m in status.metrics}
    rows = [_metric_row(m, look) for m in status.metrics]
    rows += [_unchecked_row(m, look) for m in _spec_metrics(canary) if m.name not in seen]
    last = f" (last check {age(status.last_analysis_at, now)} ago)" if status.last_analysis_at else ""
    parts: list[RenderableType] = [Text(f"Analysis{last}:"), _table(rows) if rows else Text("  no metrics")]
    if status.webhooks:
        parts += [Text("Webhooks:"), _table([_hook_row(h, look) for h in status.webhooks])]
    return Group(*parts)


Row = tuple[Text, ...]


def _unchecked_row(metric: CanaryMetric, look: Look) -> Row:
    bounds = metric.threshold_range
    detail = _bounds(bounds.min if bounds else None, bounds.max if bounds else None)
    return look.mark(PENDING_MARK), Text(metric.name), Text("-"), Text(f"{detail}  not checked yet")


def _metric_row(metric: MetricStatus, look: Look) -> Row:
    value = "no data" if metric.value is None else f"{metric.value:.2f}"
    detail = _bounds(metric.min, metric.max)
    if metric.primary_value is not None:
        detail += f"  primary {metric.primary_value:.2f}"
    if metric.message and metric.verdict is not Verdict.PASS:
        detail += f"  {metric.message}"
    return look.verdict(metric.verdict), Text(metric.name), Text(value), Text(detail)


def _hook_row(hook: WebhookStatus, look: Look) -> Row:
    code = str(hook.status_code) if hook.status_code is not None else "-"
    detail = hook.message if hook.message and not hook.success else ""
    return look.passed(hook.success), Text(f"{hook.type.value} {hook.name}"), Text(code), Text(detail)


def _table(rows: Sequence[Row]) -> Padding:
    """Aligned columns without borders, indented under their heading."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), pad_edge=False)
    for row in rows:
        table.add_row(*row)
    return Padding(table, (0, 0, 0, 2))


def event_lines(events: Sequence[Event], now: datetime) -> Group:
    if not events:
        return Group(Text("Events:"), Text("  none"))
    rows = [
        (Text(age(e.time, now) if e.time else "-"), Text(e.type), Text(e.reason), Text(e.message))
        for e in events
    ]
    return Group(Text("Events:"), _table(rows))


def status_view(view: StatusView, look: Look, now: datetime) -> Group:
    sections: list[RenderableType] = [
        header(view, look, now),
        tree(view),
        analysis(view, look, now),
        event_lines(view.events, now),
    ]
    spaced: list[RenderableType] = []
    for section in sections:
        spaced += [section, Text("")]
    return Group(*spaced[:-1])


def headline(canary: Canary) -> str:
    """One line per change for logs: ``podinfo Progressing step 3/10 weight 20% failed 0/1: message``."""
    status = canary.status or CanaryStatus()
    phase = status.phase.value if status.phase else "Pending"
    steps, index = current_step(canary)
    if fast_fail_reason(status) is not None:
        return f"{canary.metadata.name} {phase}: {status.message}"
    threshold = canary.spec.effective_analysis.failure_threshold
    return (
        f"{canary.metadata.name} {phase} step {min(index + 1, len(steps))}/{len(steps)} "
        f"weight {status.canary_weight}% failed {status.failed_checks}/{threshold}: {status.message}"
    )


# --- list --------------------------------------------------------------------------------------------------

LIST_COLUMNS = ("NAME", "NAMESPACE", "PHASE", "WEIGHT", "STEP", "FAILED", "LAST TRANSITION")
WIDE_COLUMNS = ("PROVIDER", "STRATEGY", "MIRROR", "MESSAGE")


def list_row(canary: Canary, now: datetime) -> dict[str, Any]:
    status = canary.status or CanaryStatus()
    total = status.total_steps or len(compile_steps(canary.spec))
    return {
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "phase": status.phase.value if status.phase else "Pending",
        "canaryWeight": status.canary_weight,
        "mirrorWeight": status.mirror_weight,
        "step": min(status.current_step + 1, total) if status.phase in ANALYSING else None,
        "totalSteps": total,
        "failedChecks": status.failed_checks,
        "threshold": canary.spec.effective_analysis.failure_threshold,
        "provider": canary.spec.provider,
        "strategy": strategy(canary.spec.effective_analysis).value,
        "message": status.message,
        "lastTransitionTime": status.last_transition_time,
        "age": age(status.last_transition_time, now),
    }


def list_table(rows: Sequence[dict[str, Any]], wide: bool = False, headers: bool = True) -> Table:
    """kubectl's table: upper-case headings, two spaces between columns, ``-o wide`` adds columns."""
    table = Table(box=None, show_header=headers, padding=(0, 2, 0, 0), pad_edge=False, header_style="")
    for column in LIST_COLUMNS + (WIDE_COLUMNS if wide else ()):
        table.add_column(column, no_wrap=column != "MESSAGE")
    for row in rows:
        cells = [
            Text(str(row["name"])),
            Text(str(row["namespace"])),
            Text(row["phase"], style=PHASE_STYLES.get(row["phase"]) or ""),  # StrEnum keys match the names
            Text(f"{row['canaryWeight']}%"),
            Text(f"{row['step']}/{row['totalSteps']}" if row["step"] is not None else "-"),
            Text(f"{row['failedChecks']}/{row['threshold']}"),
            Text(row["age"]),
        ]
        if wide:
            mirror = f"{row['mirrorWeight']}%"
            cells += [
                Text(row["provider"] or "default"),
                Text(row["strategy"]),
                Text(mirror),
                Text(row["message"]),
            ]
        table.add_row(*cells)
    return table


def list_names(rows: Sequence[dict[str, Any]]) -> str:
    """``-o name``: ``canary.canaryctl.dev/podinfo``, one per line, as kubectl prints them."""
    return "\n".join(f"{RESOURCE}/{row['name']}" for row in rows)
