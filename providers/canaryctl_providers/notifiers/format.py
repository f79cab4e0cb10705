"""What an alert says, decided once for every chat service: a title, a text, named fields, a plain fallback.

Vendors only choose the JSON shape around these parts, so a message reads the same in Slack and Teams.
"""

from __future__ import annotations

from dataclasses import dataclass

from canaryctl.api.models import MetricStatus, Severity
from canaryctl.ports import Alert

# Slack's attachment colours, reused by every service that takes a colour.
COLORS = {Severity.INFO: "#2eb886", Severity.WARN: "#daa038", Severity.ERROR: "#a30200"}


@dataclass(frozen=True)
class Message:
    title: str
    text: str
    severity: Severity
    fields: tuple[tuple[str, str], ...]
    alert: Alert

    @property
    def summary(self) -> str:
        """One line for notification previews."""
        return f"{self.title}: {self.text}"

    @property
    def plain(self) -> str:
        """Everything in the message as link-free plain text, for clients that cannot show cards."""
        lines = [f"[{self.severity.value}] {self.summary}"]
        lines += [f"{name}: {value}" for name, value in self.fields]
        return "\n".join(lines)

    @property
    def color(self) -> str:
        return COLORS[self.severity]

    @property
    def color_int(self) -> int:
        """The colour as an integer, the form Discord embeds take."""
        return int(self.color.lstrip("#"), 16)


def build_message(alert: Alert) -> Message:
    """The title is Flagger's ``name.namespace``; fields carry what an on-call needs without a link."""
    fields = [("Cluster", alert.cluster), ("Target", alert.target or alert.canary)]
    if alert.phase is not None:
        fields.append(("Phase", alert.phase.value))
    fields.append(("Traffic", f"canary {alert.canary_weight}% / primary {100 - alert.canary_weight}%"))
    fields.append(("Failed checks", f"{alert.failed_checks} of {alert.threshold}"))
    if alert.failing_metric:
        fields.append(("Failing metric", alert.failing_metric))
    return Message(f"{alert.canary}.{alert.namespace}", alert.message, alert.severity, tuple(fields), alert)


def describe_metric(metric: MetricStatus) -> str:
    """``Alert.failing_metric`` text: the value next to its threshold, e.g. ``error-rate = 7.5 (max 5)``."""
    value = "no data" if metric.value is None else f"{metric.value:g}"
    bounds = [
        f"{name} {bound:g}" for name, bound in (("min", metric.min), ("max", metric.max)) if bound is not None
    ]
    if metric.primary_value is not None:
        bounds.append(f"primary {metric.primary_value:g}")
    return f"{metric.name} = {value} ({', '.join(bounds)})" if bounds else f"{metric.name} = {value}"
