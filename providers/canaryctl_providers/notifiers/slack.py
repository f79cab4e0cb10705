"""Slack through slack-sdk: an incoming-webhook URL, or a bot token posting to a channel.

slack-sdk reads every reply whole, and the URL and proxy are an AlertProvider author's. So it gets an
aiohttp session whose responses stop reading at MAX_RESPONSE_BYTES, that keeps no cookie and connects
to no link-local or metadata address (the checks of ``outbound.new_client``), and a post has a hard
deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from canaryctl.ports import Alert
from canaryctl_providers.notifiers.format import Message, build_message
from canaryctl_providers.notifiers.webhook import TIMEOUT_SECONDS, Identity, NotifierError
from canaryctl_providers.outbound import MAX_RESPONSE_BYTES, OutboundError, allowed_addresses, refuse, shorten

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


class CappedResponse(aiohttp.ClientResponse):
    """Reads at most MAX_RESPONSE_BYTES of a body; the connection is closed on what is left unread."""

    _capped: bytes | None = None

    async def read(self) -> bytes:
        if self._capped is None:
            body = bytearray()
            while len(body) < MAX_RESPONSE_BYTES:
                chunk = await self.content.read(MAX_RESPONSE_BYTES - len(body))
                if not chunk:
                    break
                body += chunk
            self._capped = bytes(body)
        return self._capped

    async def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        return (await self.read()).decode(encoding or self.charset or "utf-8", errors="replace")

    async def json(
        self,
        *,
        encoding: str | None = None,
        loads: Callable[[str], Any] = json.loads,
        content_type: str | None = "application/json",
    ) -> Any:
        if content_type and content_type not in self.content_type:
            raise aiohttp.ContentTypeError(
                self.request_info, self.history, status=self.status, message=f"not {content_type}"
            )
        return loads(await self.text(encoding))


class GuardedResolver(AbstractResolver):
    """Resolves as ``outbound.allowed_addresses`` does: a name with a link-local or metadata address is
    refused. aiohttp connects to what this returns and resolves no name again (an address literal it
    does not ask about: the session's trace checks those, redirects included)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await allowed_addresses(host, port):
            version = ipaddress.ip_address(address.partition("%")[0]).version
            found = socket.AF_INET if version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, found):
                results.append(
                    {"hostname": host, "host": address, "port": port, "family": found, "proto": 0, "flags": 0}
                )
        return results

    async def close(self) -> None:
        return None


async def _refuse_target(_session: Any, _context: Any, params: Any) -> None:
    """An address literal never reaches the resolver: the first URL and each redirect's are checked."""
    url = str(params.url)
    if isinstance(params, aiohttp.TraceRequestRedirectParams):
        url = urllib.parse.urljoin(url, params.response.headers.get("Location", ""))
    refuse(urllib.parse.urlsplit(url).hostname or "")


def _guard_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_refuse_target)
    trace.on_request_redirect.append(_refuse_target)
    return trace


@asynccontextmanager
async def bounded_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session for one post: capped bodies, no content coding (nothing to inflate), a total timeout,
    no cookie jar and no link-local or metadata address."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=GuardedResolver()),
        trace_configs=[_guard_trace()],
        cookie_jar=aiohttp.DummyCookieJar(),
        response_class=CappedResponse,
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
    ) as session:
        yield session


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
        try:
            if self._proxy:  # an address literal the resolver would not see
                refuse(urllib.parse.urlsplit(self._proxy).hostname or "")
            async with asyncio.timeout(TIMEOUT_SECONDS), bounded_session() as session:
                await self._send(session, body)
        except TimeoutError as exc:
            raise NotifierError(f"Slack did not answer within {TIMEOUT_SECONDS:g}s") from exc
        except OutboundError as exc:
            raise NotifierError(f"Slack post refused: {exc}") from exc

    async def _send(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        if self._token:
            client = AsyncWebClient(
                token=self._token, base_url=self._api_url, proxy=self._proxy, session=session
            )
            try:
                await client.chat_postMessage(**body)
            except SlackApiError as exc:
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
                reason = shorten(str(error or exc), 200)
                raise NotifierError(f"Slack chat.postMessage failed: {reason}") from exc
            return
        assert self._url is not None
        response = await AsyncWebhookClient(self._url, proxy=self._proxy, session=session).send_dict(body)
        if response.status_code != 200:
            raise NotifierError(
                f"Slack webhook answered HTTP {response.status_code}: {shorten(response.body, 200)}"
            )
