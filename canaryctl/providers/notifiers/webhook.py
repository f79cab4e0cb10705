"""The one JSON-over-HTTP notifier; each chat service supplies only a renderer for its payload shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from canaryctl.ports import Alert
from canaryctl.providers.notifiers.format import Message, build_message

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
    """POSTs ``body``; any non-2xx answer or transport error becomes a NotifierError."""
    try:
        async with httpx.AsyncClient(proxy=proxy, timeout=TIMEOUT_SECONDS) as client:
            response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise NotifierError(f"cannot reach {httpx.URL(url).host}: {type(exc).__name__}: {exc}") from exc
    if not response.is_success:
        raise NotifierError(
            f"{httpx.URL(url).host} answered HTTP {response.status_code}: {response.text[:200]}"
        )


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
