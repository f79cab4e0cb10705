"""Slack through slack-sdk: an incoming-webhook URL, or a bot token posting to a channel."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from canaryctl.ports import Alert
from canaryctl.providers.notifiers.format import Message, build_message
from canaryctl.providers.notifiers.webhook import Identity, NotifierError

SLACK_API_URL = "https://slack.com/api/"


def escape(text: str) -> str:
    """Slack's required escaping: a canary message such as ``value < 99`` must not become a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(message: Message, identity: Identity) -> dict[str, Any]:
    """Top-level ``text`` for notifications, a coloured attachment holding blocks, and its plain fallback."""
    fields = [{"type": "mrkdwn", "text": f"*{name}*\n{escape(value)}"} for name, value in message.fields]
    blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{escape(message.title)}*\n{escape(message.text)}"},
        },
        {"type": "section", "fields": fields},
    ]
    body: dict[str, Any] = {
        "text": escape(message.summary),
        "attachments": [{"color": message.color, "fallback": message.plain, "blocks": blocks}],
    }
    if identity.channel:
        body["channel"] = identity.channel
    if identity.username:
        body["username"] = identity.username
    return body


class SlackNotifier:
    """Sends through ``chat.postMessage`` when a bot token is given, else to the incoming-webhook URL."""

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        identity: Identity | None = None,
        proxy: str | None = None,
        api_url: str = SLACK_API_URL,
    ) -> None:
        if token and not (identity and identity.channel):
            raise ValueError("a Slack bot token needs a channel to post to")
        if not token and not url:
            raise ValueError("Slack needs an incoming-webhook address or a bot token and channel")
        self._url = url
        self._token = token
        self._identity = identity or Identity()
        self._proxy = proxy
        self._api_url = api_url

    async def post(self, alert: Alert) -> None:
        body = render(build_message(alert), self._identity)
        if self._token:
            client = AsyncWebClient(token=self._token, base_url=self._api_url, proxy=self._proxy)
            try:
                await client.chat_postMessage(**body)
            except SlackApiError as exc:
                raise NotifierError(f"Slack chat.postMessage failed: {exc.response.get('error')}") from exc
            return
        assert self._url is not None
        response = await AsyncWebhookClient(self._url, proxy=self._proxy).send_dict(body)
        if response.status_code != 200:
            raise NotifierError(f"Slack webhook answered HTTP {response.status_code}: {response.body[:200]}")
