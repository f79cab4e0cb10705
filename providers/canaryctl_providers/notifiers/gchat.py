"""Google Chat: the summary as ``text`` (what notifications show) and a cardsV2 card with the fields."""

from __future__ import annotations

from typing import Any

from canaryctl_providers.notifiers.format import Message
from canaryctl_providers.notifiers.webhook import Identity


def render(message: Message, _identity: Identity) -> dict[str, Any]:
    widgets: list[dict[str, Any]] = [{"textParagraph": {"text": message.text}}]
    widgets += [{"decoratedText": {"topLabel": name, "text": value}} for name, value in message.fields]
    card = {
        "header": {"title": message.title, "subtitle": message.severity.value},
        "sections": [{"widgets": widgets}],
    }
    return {"text": message.summary, "cardsV2": [{"cardId": "canaryctl-alert", "card": card}]}
