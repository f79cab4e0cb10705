"""Live progress of a local run: a block redrawn in place on a terminal (rich Live), one ASCII line per
change otherwise, and events as timestamped lines above it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Group
from rich.live import Live
from rich.text import Text

from canaryctl.api.models import Canary, CanaryStatus, MetricStatus, WebhookStatus
from canaryctl.engine.machine import fast_fail_reason
from canaryctl.engine.steps import compile_steps
from canaryctl.terminal import Look, Screen


def metric_line(metric: MetricStatus, look: Look) -> Text:
    value = "no data" if metric.value is None else f"{metric.value:.2f}"
    bounds = []
    if metric.min is not None:
        bounds.append(f">= {metric.min:g}")
    if metric.max is not None:
        bounds.append(f"<= {metric.max:g}")
    compared = f" (primary {metric.primary_value:.2f})" if metric.primary_value is not None else ""
    line = f" {metric.name}: {value}{compared} {' '.join(bounds)}".rstrip()
    return Text.assemble("  ", look.verdict(metric.verdict), line)


def hook_line(hook: WebhookStatus, look: Look) -> Text:
    code = f" {hook.status_code}" if hook.status_code is not None else ""
    detail = f" {hook.message}" if hook.message and not hook.success else ""
    return Text.assemble("  ", look.passed(hook.success), f" {hook.type.value} {hook.name}:{code}{detail}")


def progress_line(canary: Canary) -> Text:
    """The step, and failed checks against the threshold, or the fastFail rollback that ended it."""
    status = canary.status or CanaryStatus()
    steps = compile_steps(canary.spec)
    index = min(status.current_step, len(steps))
    step = (
        f"step {index + 1}/{len(steps)}: {steps[index].describe()}"
        if index < len(steps)
        else "all steps done"
    )
    if fast_fail_reason(status) is not None:
        return Text.assemble(f"  {step}  ", ("rolled back by fastFail", "red"), " (not by failed checks)")
    threshold = canary.spec.effective_analysis.failure_threshold
    counted = Text(f"{status.failed_checks}/{threshold}", style="red" if status.failed_checks else "")
    return Text.assemble(f"  {step}  failed checks ", counted)


def render(canary: Canary, extra: list[str], look: Look) -> list[Text]:
    status = canary.status or CanaryStatus()
    routing = Text.assemble("  canary ", look.bar(status.canary_weight), f" {status.canary_weight:3d}%")
    routing.append(f"  mirror {status.mirror_weight}%")
    routing.append("  fault on" if status.fault else "")
    routing.append("  header route on" if status.header_route else "")
    lines = [
        Text.assemble(
            look.phase(status.phase),
            f"  {canary.metadata.name}.{canary.metadata.namespace}  {status.message}",
        ),
        routing,
        progress_line(canary),
    ]
    lines += [metric_line(m, look) for m in status.metrics]
    lines += [hook_line(h, look) for h in status.webhooks]
    return lines + [Text(line) for line in extra]


class Console:
    """Prints events as they happen and the status block after each tick; ``close()`` ends the block."""

    def __init__(self, out: TextIO | None = None, extra: Callable[[], list[str]] | None = None) -> None:
        self.screen = Screen(out)
        self.extra = extra or (lambda: [])
        self._live: Live | None = None
        self._last = ""

    def event(self, message: str, warning: bool) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        line = Text.assemble(stamp, " ", ("WARN ", "yellow") if warning else "", message)
        if self._live is not None:
            self._live.console.print(line)
        else:
            self.screen.print(line, soft_wrap=True)

    def show(self, canary: Canary) -> None:
        lines = render(canary, self.extra(), self.screen.look)
        if self.screen.look.unicode:
            if self._live is None:
                self._live = Live(console=self.screen.console, auto_refresh=False)
                self._live.start()
            self._live.update(Group(*lines), refresh=True)
            return
        flat = " | ".join([lines[0].plain, *(line.plain.strip() for line in lines[1:])])
        if flat != self._last:
            self.screen.print(flat, soft_wrap=True)
        self._last = flat

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class ConsoleEvents:
    """The Events port for a local run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.recorded: list[tuple[str, str, bool]] = []

    async def record(self, canary: Canary, reason: str, message: str, warning: bool) -> None:
        self.recorded.append((reason, message, warning))
        self.console.event(message, warning)
