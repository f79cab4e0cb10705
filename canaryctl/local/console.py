"""Live progress of a local run: a redrawn block on a terminal, one line per change otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from canaryctl.api.models import Canary, CanaryStatus, MetricStatus, Phase, Verdict, WebhookStatus
from canaryctl.engine.steps import compile_steps

ICONS = {
    Phase.SUCCEEDED: "✔",
    Phase.FAILED: "✖",
    Phase.PROGRESSING: "◐",
    Phase.WAITING: "⏸",
    Phase.WAITING_PROMOTION: "⏸",
    Phase.PROMOTING: "▲",
    Phase.FINALISING: "▲",
}
BAR_WIDTH = 20


def weight_bar(weight: int) -> str:
    filled = round(weight * BAR_WIDTH / 100)
    return "[" + "█" * filled + "·" * (BAR_WIDTH - filled) + f"] {weight:3d}%"


def metric_line(metric: MetricStatus) -> str:
    mark = {Verdict.PASS: "✔", Verdict.FAIL: "✖"}.get(metric.verdict, "?")
    value = "no data" if metric.value is None else f"{metric.value:.2f}"
    bounds = []
    if metric.min is not None:
        bounds.append(f">= {metric.min:g}")
    if metric.max is not None:
        bounds.append(f"<= {metric.max:g}")
    compared = f" (primary {metric.primary_value:.2f})" if metric.primary_value is not None else ""
    return f"  {mark} {metric.name}: {value}{compared} {' '.join(bounds)}".rstrip()


def hook_line(hook: WebhookStatus) -> str:
    mark = "✔" if hook.success else "✖"
    code = f" {hook.status_code}" if hook.status_code is not None else ""
    detail = f" {hook.message}" if hook.message and not hook.success else ""
    return f"  {mark} {hook.type.value} {hook.name}:{code}{detail}"


def render(canary: Canary, extra: list[str]) -> list[str]:
    status = canary.status or CanaryStatus()
    steps = compile_steps(canary.spec)
    phase = status.phase.value if status.phase else "Pending"
    icon = ICONS.get(status.phase, "·") if status.phase else "·"
    index = min(status.current_step, len(steps))
    step = (
        f"step {index + 1}/{len(steps)}: {steps[index].describe()}"
        if index < len(steps)
        else "all steps done"
    )
    lines = [
        f"{icon} {canary.metadata.name}.{canary.metadata.namespace}  {phase}  {status.message}",
        f"  canary {weight_bar(status.canary_weight)}  mirror {status.mirror_weight}%"
        + ("  fault on" if status.fault else "")
        + ("  header route on" if status.header_route else ""),
        f"  {step}  failed checks {status.failed_checks}/{canary.spec.effective_analysis.failure_threshold}",
    ]
    lines += [metric_line(m) for m in status.metrics]
    lines += [hook_line(h) for h in status.webhooks]
    return lines + extra


class Console:
    """Prints events as they happen and the status block after each tick."""

    def __init__(self, out: TextIO | None = None, extra: Callable[[], list[str]] | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty()
        self.extra = extra or (lambda: [])
        self._drawn = 0
        self._last: list[str] = []

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def event(self, message: str, warning: bool) -> None:
        self._clear()
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.out.write(f"{stamp} {'WARN ' if warning else ''}{message}\n")
        if self.live:
            self._redraw(self._last)
        self.out.flush()

    def show(self, canary: Canary) -> None:
        lines = render(canary, self.extra())
        if not self.live and lines == self._last:
            return
        self._clear()
        self._redraw(lines)

    def _redraw(self, lines: list[str]) -> None:
        self._last = lines
        if not lines:
            return
        if self.live:
            self.out.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self.out.write(lines[0] + " | " + " | ".join(line.strip() for line in lines[1:]) + "\n")
        self.out.flush()


class ConsoleEvents:
    """The Events port for a local run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.recorded: list[tuple[str, str, bool]] = []

    async def record(self, canary: Canary, reason: str, message: str, warning: bool) -> None:
        self.recorded.append((reason, message, warning))
        self.console.event(message, warning)
