"""The one JSON-over-HTTP notifier; each chat service supplies only a renderer for its payload shape.

The address is an AlertProvider author's: a post has a hard deadline and only the start of the reply
is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from canaryctl.ports import Alert
from canaryctl_providers.notifiers.format import Message, build_message
from canaryctl_providers.outbound import MESSAGE_BODY_BYTES, OutboundError, describe, fetch, new_client

# Deadline of one post, connect to last byte.
TIMEOUT_SECONDS = 10.0


class NotifierError(Exception):
    """A chat service did not accept an alert."""


@dataclass(frozen=True)
class Identity:
    """Who posts where, for services whose webhooks let the sender choose (Flagger's channel/username)."""

    channel: str | None = None
    username: str | None = None


Renderer = Callable[[Message, Identity], dict[str, Any]]


async def post_json(url: str, body: dict[str, Any], proxy: str | None) -> None:
    """POSTs ``body``; any non-2xx answer, transport error or exceeded bound becomes a NotifierError."""
    host = httpx.URL(url).host
    try:
        async with new_client(proxy=proxy) as client:
            reply = await fetch(
                client,
                "POST",
                url,
                json=body,
                deadline=TIMEOUT_SECONDS,
                max_bytes=MESSAGE_BODY_BYTES,
                truncate=True,
            )
    except (httpx.HTTPError, OutboundError) as exc:
        raise NotifierError(f"cannot reach {host}: {describe(exc)}") from exc
    if not reply.is_success:
        raise NotifierError(f"{host} answered HTTP {reply.status_code}: {reply.snippet(200)}")


class WebhookNotifier:
    """Posts the rendered alert to an incoming-webhook URL."""

    def __init__(
        self, url: str, render: Renderer, identity: Identity | None = None, proxy: str | None = None
    ) -> None:
        self.url = url
        self._render = render
        self._identity = identity or Identity()
        self._proxy = proxy

    async def post(self, alert: Alert) -> None:
        await post_json(self.url, self._render(build_message(alert), self._identity), self._proxy)
