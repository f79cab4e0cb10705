"""A generic JSON webhook: the alert's fields by name for machines, plus ``text`` for humans."""

from __future__ import annotations

from typing import Any

from canaryctl_providers.notifiers.format import Message
from canaryctl_providers.notifiers.webhook import Identity


def render(message: Message, identity: Identity) -> dict[str, Any]:
    alert = message.alert
    body: dict[str, Any] = {
        "canary": alert.canary,
        "namespace": alert.namespace,
        "cluster": alert.cluster,
        "target": alert.target or alert.canary,
        "phase": alert.phase.value if alert.phase is not None else None,
        "severity": alert.severity.value,
        "message": alert.message,
        "canaryWeight": alert.canary_weight,
        "failedChecks": alert.failed_checks,
        "threshold": alert.threshold,
        "failingMetric": alert.failing_metric,
        "text": message.plain,
    }
    if identity.channel:
        body["channel"] = identity.channel
    return body
