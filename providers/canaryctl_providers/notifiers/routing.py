"""Which notifiers get an alert, with Flagger's severity rules and a global default notifier."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from canaryctl.api.models import Canary, Severity
from canaryctl.ports import Alert, Notifier

log = logging.getLogger(__name__)

RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.ERROR: 2}

# Looks up an AlertProvider (and its secret) by name and namespace and builds its notifier.
ProviderResolver = Callable[[str, str], Awaitable[Notifier]]


def subscribed(subscription: Severity, severity: Severity) -> bool:
    """Flagger: info gets all alerts, warn gets warn and error, error gets only error."""
    return RANK[severity] >= RANK[subscription]


def recipients(canary: Canary, severity: Severity) -> list[tuple[str, str]]:
    """The (name, namespace) of each provider that wants this severity, once each, in spec order."""
    namespace = canary.metadata.namespace or "default"
    refs: list[tuple[str, str]] = []
    for alert in canary.spec.effective_analysis.alerts or []:
        ref = (alert.provider_ref.name, alert.provider_ref.namespace or namespace)
        if subscribed(alert.severity, severity) and ref not in refs:
            refs.append(ref)
    return refs


class AlertRouter:
    """Sends an alert to the canary's subscribed providers, or to the default notifier when the canary
    lists no alerts (as Flagger's global Slack flags do). Never raises: failures are returned."""

    def __init__(self, resolve: ProviderResolver, default: Notifier | None = None) -> None:
        self._resolve = resolve
        self._default = default

    async def send(self, canary: Canary, alert: Alert) -> list[str]:
        """Posts concurrently; returns one message per provider that failed."""
        if not canary.spec.effective_analysis.alerts:
            error = await _post(self._default, alert) if self._default is not None else None
            return [f"default notifier: {error}"] if error else []
        refs = recipients(canary, alert.severity)
        results = await asyncio.gather(*(self._send_to(ref, alert) for ref in refs))
        return [f"{ns}/{name}: {error}" for (name, ns), error in zip(refs, results, strict=True) if error]

    async def _send_to(self, ref: tuple[str, str], alert: Alert) -> str | None:
        try:
            notifier = await self._resolve(*ref)
        except Exception as exc:  # a missing provider or secret must not stop the other providers
            return f"cannot resolve alert provider: {exc}"
        return await _post(notifier, alert)


async def _post(notifier: Notifier, alert: Alert) -> str | None:
    try:
        await notifier.post(alert)
    except Exception as exc:  # any failure of a chat service is reported, never propagated
        log.warning("alert for %s.%s not delivered: %s", alert.canary, alert.namespace, exc)
        return str(exc) or type(exc).__name__
    return None
