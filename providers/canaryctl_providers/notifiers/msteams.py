"""Microsoft Teams: an Adaptive Card in a ``message``, which both Workflows webhooks and the older
Office 365 connector webhooks accept (the MessageCard format is retired with the connectors)."""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import Severity
from canaryctl_providers.notifiers.format import Message
from canaryctl_providers.notifiers.webhook import Identity

CARD_COLORS = {Severity.INFO: "Good", Severity.WARN: "Warning", Severity.ERROR: "Attention"}


def render(message: Message, _identity: Identity) -> dict[str, Any]:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "fallbackText": message.plain,
        "body": [
            {
                "type": "TextBlock",
                "text": message.title,
                "weight": "Bolder",
                "size": "Medium",
                "color": CARD_COLORS[message.severity],
            },
            {"type": "TextBlock", "text": message.text, "wrap": True},
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in message.fields]},
        ],
    }
    return {
        "type": "message",
        "summary": message.summary,
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }
