"""Rocket.Chat: its incoming webhooks take Slack's legacy attachment shape (fields, no blocks)."""

from __future__ import annotations

from typing import Any

from canaryctl_providers.notifiers.format import Message
from canaryctl_providers.notifiers.webhook import Identity


def render(message: Message, identity: Identity) -> dict[str, Any]:
    attachment = {
        "title": message.title,
        "text": message.text,
        "color": message.color,
        "fields": [{"title": name, "value": value, "short": True} for name, value in message.fields],
    }
    body: dict[str, Any] = {"text": message.summary, "attachments": [attachment]}
    if identity.channel:
        body["channel"] = identity.channel
    if identity.username:
        body["alias"] = identity.username
    return body
