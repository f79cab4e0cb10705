"""Text for ``kubectl canary status`` and ``list``: a header, a tree, the analysis and the last events.

Two styles: ``rich`` (a terminal: colors, ✔/✖ and box-drawing characters) and plain (pipes and CI logs:
no escape codes, ASCII marks such as ``ok``/``FAIL``, ``|--`` trees). Text from the cluster (messages,
names) is shown as written. Times are relative to an injected ``now`` so the output is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canaryctl.api.models import (
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
from canaryctl.engine.steps import Step, StepKind, Strategy, canary_weights, compile_steps, strategy
from canaryctl.local.console import BAR_WIDTH, ICONS

RESET = "\x1b[0m"
COLORS = {"green": "\x1b[32m", "red": "\x1b[31m", "yellow": "\x1b[33m", "cyan": "\x1b[36m", "dim": "\x1b[2m"}
PHASE_COLORS = {
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.PROGRESSING: "cyan",
    Phase.PROMOTING: "cyan",
    Phase.FINALISING: "cyan",
    Phase.WAITING: "yellow",
    Phase.WAITING_PROMOTION: "yellow",
}
# Plain mode spells out what a terminal shows as symbols.
ASCII = str.maketrans({"×": "x", "→": "->", "…": "..."})
MARKS = {
    Verdict.PASS: ("✔", "ok", "green"),
    Verdict.FAIL: ("✖", "FAIL", "red"),
    Verdict.NO_DATA: ("?", "NODATA", "yellow"),
    Verdict.ERROR: ("⚠", "ERROR", "red"),
    Verdict.INCONCLUSIVE: ("?", "INCONCLUSIVE", "yellow"),
}
PENDING_MARK = ("·", "-", "dim")
LABEL_WIDTH = 15
ANALYSING = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)


@dataclass(frozen=True)
class Style:
    rich: bool

    def paint(self, text: str, color: str | None) -> str:
        return f"{COLORS[color]}{text}{RESET}" if self.rich and color else text

    def mark(self, mark: tuple[str, str, str]) -> str:
        symbol, word, color = mark
        return self.paint(symbol if self.rich else word, color)

    def tree(self, last: bool) -> tuple[str, str]:
        """The prefix of an item and the prefix continuing below it."""
        if self.rich:
            return ("└── ", "    ") if last else ("├── ", "│   ")
        return ("`-- ", "    ") if last else ("|-- ", "|   ")

    def bar(self, weight: int) -> str:
        filled = round(weight * BAR_WIDTH / 100)
        full, empty = ("█", "·") if self.rich else ("#", ".")
        return "[" + full * filled + empty * (BAR_WIDTH - filled) + "]"

    def phase(self, phase: Phase | None) -> str:
        name = phase.value if phase else "Pending"
        if not self.rich:
            return name
        icon = ICONS.get(phase, "·") if phase else "·"
        return self.paint(f"{icon} {name}", PHASE_COLORS.get(phase) if phase else None)

    def finish(self, lines: Sequence[str]) -> str:
        text = "\n".join(line.rstrip() for line in lines)
        return text if self.rich else text.translate(ASCII)


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


def weight_text(view: StatusView, style: Style) -> str:
    status = view.canary.status or CanaryStatus()
    set_weight = f"{style.bar(status.canary_weight)} {status.canary_weight}% canary"
    if status.header_route:
        set_weight += ", matching requests to canary"
    observed = view.observed
    if observed is None or observed.weight is None:
        detail = observed.source if observed else "not read"
        return f"{set_weight} (router: {detail}; showing the status weight)"
    if observed.weight != status.canary_weight:
        lagging = style.paint(f"{observed.weight}%", "yellow")
        return f"{set_weight} (router: {lagging} in {observed.source}, updating)"
    return f"{set_weight} (router: {observed.weight}% in {observed.source})"


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


def _images(workloads: Sequence[Workload]) -> list[str]:
    width = max((len(w.role) for w in workloads), default=0)
    return [f"{w.role.ljust(width)}  {', '.join(w.images) or '-'}" for w in workloads if w.found]


def header(view: StatusView, style: Style, now: datetime) -> list[str]:
    canary = view.canary
    status = canary.status or CanaryStatus()
    step, following = step_text(canary)
    threshold = canary.spec.effective_analysis.failure_threshold
    failed = f"{status.failed_checks}/{threshold}"
    rows: list[tuple[str, str]] = [
        ("Name", canary.metadata.name or ""),
        ("Namespace", canary.metadata.namespace or ""),
        ("Status", style.phase(status.phase)),
        ("Message", status.message or "-"),
    ]
    if view.revision_pending:
        rows.append(("Revision", style.paint("new revision detected, waiting for the operator", "yellow")))
    rows += [
        ("Strategy", strategy_text(canary)),
        ("Step", step),
        ("Next", following),
        ("Time left", time_left(canary, now)),
        ("Weight", weight_text(view, style)),
        ("Mirror", f"{status.mirror_weight}%"),
        ("Fault", fault_text(status)),
        ("Failed checks", style.paint(failed, "red") if status.failed_checks else failed),
    ]
    rows += [("Images" if i == 0 else "", line) for i, line in enumerate(_images(view.workloads))]
    return [f"{(label + ':') if label else '':<{LABEL_WIDTH}}{value}" for label, value in rows]


# --- tree, analysis, events -----------------------------------------------------------------------------


def _workload_line(workload: Workload, style: Style) -> str:
    if not workload.found:
        return f"{workload.kind} {workload.name} ({workload.role})  {style.paint('not found', 'red')}"
    counts = f"{workload.ready}/{workload.desired} ready"
    healthy = workload.ready >= workload.desired > 0
    counts = style.paint(counts, "green" if healthy else "yellow")
    return f"{workload.kind} {workload.name} ({workload.role})  {counts}"


def tree(view: StatusView, style: Style) -> list[str]:
    canary = view.canary
    lines = [f"Canary {canary.metadata.name}"]
    if not view.workloads:
        target = canary.spec.target_ref
        return [*lines, style.tree(True)[0] + f"{target.kind.value} {target.name} (traffic only, no pods)"]
    for w_index, workload in enumerate(view.workloads):
        branch, below = style.tree(w_index == len(view.workloads) - 1)
        lines.append(branch + _workload_line(workload, style))
        for p_index, pod in enumerate(workload.pods):
            leaf, _ = style.tree(p_index == len(workload.pods) - 1)
            restarts = f"  {pod.restarts} restart{'s' if pod.restarts > 1 else ''}" if pod.restarts else ""
            lines.append(f"{below}{leaf}pod {pod.name}  {pod.phase}  {pod.ready} ready{restarts}")
    return lines


def _bounds(low: float | None, high: float | None) -> str:
    parts = ([f"min {low:g}"] if low is not None else []) + ([f"max {high:g}"] if high is not None else [])
    return " ".join(parts) or "no threshold"


def _spec_metrics(canary: Canary) -> list[CanaryMetric]:
    steps, index = current_step(canary)
    step = steps[index] if index < len(steps) else None
    if step is not None and step.metrics is not None:
        return list(step.metrics)
    return list(canary.spec.effective_analysis.metrics or [])


def analysis(view: StatusView, style: Style, now: datetime) -> list[str]:
    canary = view.canary
    status = canary.status or CanaryStatus()
    seen = {m.name for m in status.metrics}
    rows = [_metric_row(m, style) for m in status.metrics]
    rows += [_unchecked_row(m, style) for m in _spec_metrics(canary) if m.name not in seen]
    last = f" (last check {age(status.last_analysis_at, now)} ago)" if status.last_analysis_at else ""
    lines = [f"Analysis{last}:"] + (_table(rows) if rows else ["  no metrics"])
    if status.webhooks:
        lines += ["Webhooks:", *_table([_hook_row(h, style) for h in status.webhooks])]
    return lines


def _unchecked_row(metric: CanaryMetric, style: Style) -> tuple[str, str, str, str]:
    bounds = metric.threshold_range
    detail = _bounds(bounds.min if bounds else None, bounds.max if bounds else None)
    return style.mark(PENDING_MARK), metric.name, "-", f"{detail}  not checked yet"


def _metric_row(metric: MetricStatus, style: Style) -> tuple[str, str, str, str]:
    value = "no data" if metric.value is None else f"{metric.value:.2f}"
    detail = _bounds(metric.min, metric.max)
    if metric.primary_value is not None:
        detail += f"  primary {metric.primary_value:.2f}"
    if metric.message and metric.verdict is not Verdict.PASS:
        detail += f"  {metric.message}"
    return style.mark(MARKS[metric.verdict]), metric.name, value, detail


def _hook_row(hook: WebhookStatus, style: Style) -> tuple[str, str, str, str]:
    mark = MARKS[Verdict.PASS if hook.success else Verdict.FAIL]
    code = str(hook.status_code) if hook.status_code is not None else "-"
    detail = hook.message if hook.message and not hook.success else ""
    return style.mark(mark), f"{hook.type.value} {hook.name}", code, detail


def _table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(_visible_len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(cell + " " * (widths[i] - _visible_len(cell)) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def _visible_len(text: str) -> int:
    for code in (*COLORS.values(), RESET):
        text = text.replace(code, "")
    return len(text)


def event_lines(events: Sequence[Event], now: datetime) -> list[str]:
    if not events:
        return ["Events:", "  none"]
    rows = [(age(e.time, now) if e.time else "-", e.type, e.reason, e.message) for e in events]
    return ["Events:", *_table(rows)]


def status_text(view: StatusView, style: Style, now: datetime) -> str:
    sections = [
        header(view, style, now),
        tree(view, style),
        analysis(view, style, now),
        event_lines(view.events, now),
    ]
    lines: list[str] = []
    for section in sections:
        lines += [*section, ""]
    return style.finish(lines[:-1])


def headline(canary: Canary) -> str:
    """One line per change for logs: ``podinfo Progressing step 3/10 weight 20% failed 0/1: message``."""
    status = canary.status or CanaryStatus()
    phase = status.phase.value if status.phase else "Pending"
    steps, index = current_step(canary)
    threshold = canary.spec.effective_analysis.failure_threshold
    return (
        f"{canary.metadata.name} {phase} step {min(index + 1, len(steps))}/{len(steps)} "
        f"weight {status.canary_weight}% failed {status.failed_checks}/{threshold}: {status.message}"
    ).translate(ASCII)


# --- list --------------------------------------------------------------------------------------------------

LIST_COLUMNS = ("NAME", "NAMESPACE", "PHASE", "WEIGHT", "STEP", "FAILED", "LAST TRANSITION")


def list_row(canary: Canary, now: datetime) -> dict[str, Any]:
    status = canary.status or CanaryStatus()
    total = status.total_steps or len(compile_steps(canary.spec))
    return {
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "phase": status.phase.value if status.phase else "Pending",
        "canaryWeight": status.canary_weight,
        "step": min(status.current_step + 1, total) if status.phase in ANALYSING else None,
        "totalSteps": total,
        "failedChecks": status.failed_checks,
        "threshold": canary.spec.effective_analysis.failure_threshold,
        "lastTransitionTime": status.last_transition_time,
        "age": age(status.last_transition_time, now),
    }


def list_text(rows: Sequence[dict[str, Any]], style: Style) -> str:
    if not rows:
        return "No canaries found."
    cells = [LIST_COLUMNS] + [
        (
            str(r["name"]),
            str(r["namespace"]),
            style.paint(r["phase"], PHASE_COLORS.get(r["phase"])),  # StrEnum keys match the names
            f"{r['canaryWeight']}%",
            f"{r['step']}/{r['totalSteps']}" if r["step"] is not None else "-",
            f"{r['failedChecks']}/{r['threshold']}",
            r["age"],
        )
        for r in rows
    ]
    return style.finish(_table(cells, indent=""))
