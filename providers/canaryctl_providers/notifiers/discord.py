"""Discord: native webhook JSON (``content`` + one embed), with mentions disabled so a canary name can
never ping @everyone."""

from __future__ import annotations

from typing import Any

from canaryctl_providers.notifiers.format import Message
from canaryctl_providers.notifiers.webhook import Identity

# Discord's documented limits: content 2000, embed description 4096, field value 1024 characters.
CONTENT_LIMIT, DESCRIPTION_LIMIT, FIELD_LIMIT = 2000, 4096, 1024


def render(message: Message, identity: Identity) -> dict[str, Any]:
    embed = {
        "title": message.title,
        "description": message.text[:DESCRIPTION_LIMIT],
        "color": message.color_int,
        "fields": [
            {"name": name, "value": value[:FIELD_LIMIT], "inline": True} for name, value in message.fields
        ],
    }
    body: dict[str, Any] = {
        "content": message.summary[:CONTENT_LIMIT],
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }
    if identity.username:
        body["username"] = identity.username
    return body
