"""Bounded HTTP for every call to an address a Canary, MetricTemplate or AlertProvider names.

Their authors are tenants, and so are the servers they point at. A server that drips one byte a second,
answers 150 MiB or never answers must cost only its own Canary a failed call: each exchange has a hard
deadline for the whole of it (connect, send, headers and body, not per read), the body is streamed and
capped, calls are limited per Canary, and no text a server sends reaches status, events or logs
unshortened.

Calls to one address share a keep-alive client per event loop (``shared_client``): a new connection per
call cost ~4 ms under load, a quarter of a busy operator's tick. Sharing gives no tenant more: the
per-Canary limits bound each one's calls, headers go with each request, and no cookie is ever kept.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import json
import ssl
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import httpx

from canaryctl.api.models import Canary

MIB = 1 << 20
# Metric replies larger than this are an error: a value never needs more.
MAX_RESPONSE_BYTES = 1 * MIB
# Webhook and notifier replies only ever become the start of a message: the rest is not read.
MESSAGE_BODY_BYTES = 4096
# What fetch's ``until`` sees of a body: enough for a stream's closing message.
UNTIL_TAIL_BYTES = 4096
# Longest text of a remote error kept for status, events and logs; body excerpts are shorter still.
MAX_ERROR_CHARS = 1000
SNIPPET_CHARS = 300
# Calls in flight at once for one Canary; the rest of that Canary's calls wait for a free slot.
HOOKS_PER_CANARY = 8
QUERIES_PER_CANARY = 8
# Idle connections kept per address; how many are open at once is bounded by the per-Canary limits.
# httpcore checks every pooled connection (two system calls each) whenever a request starts or ends:
# at 32 it took a quarter of the operator's event loop during 500 rollouts; 8 keep sequential calls on one
# connection and cost 1.2 ms of CPU per request in bursts of 40 against 2.8 ms at 32 (loopback).
KEEPALIVE_PER_ADDRESS = 8
KEEPALIVE_SECONDS = 30.0


class OutboundError(Exception):
    """The exchange did not complete within its bounds."""


class DeadlineExceeded(OutboundError):
    pass


class ResponseTooLarge(OutboundError):
    pass


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def canary_key(canary: Canary) -> tuple[str, str]:
    return (canary.metadata.namespace or "", canary.metadata.name or "")


class Slots:
    """At most ``limit`` calls in flight per key (one Canary), so no tenant can hold every connection.

    A key's semaphore lives while some call holds or awaits it and is dropped after, so Canaries that
    come and go leave nothing behind.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, not {limit}")
        self.limit = limit
        self._semaphores: weakref.WeakValueDictionary[Hashable, asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )

    def __call__(self, key: Hashable) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.limit)
            self._semaphores[key] = semaphore
        return semaphore


@functools.cache
def ssl_context(verify: bool) -> ssl.SSLContext:
    """One TLS context per mode, shared by every client: building one loads the CA bundle (~10 ms)."""
    return httpx.create_ssl_context(verify=verify)


Origin = tuple[str, str, int | None, bool]  # scheme, host, port, verify TLS
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Origin, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that accepts no cookie: one tenant's server must not set what another's request sends."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def shared_client(url: str, verify: bool = True) -> httpx.AsyncClient:
    """The keep-alive client of ``url``'s scheme, host and port in the running event loop (an httpx
    client belongs to the loop it first ran in)."""
    parsed = httpx.URL(url)
    origin = (parsed.scheme, parsed.host, parsed.port, verify)
    clients = _shared.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(origin)
    if client is None or client.is_closed:
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=KEEPALIVE_PER_ADDRESS,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        client = httpx.AsyncClient(verify=ssl_context(verify), limits=limits, cookies=_no_cookies())
        clients[origin] = client
    return client


async def close_shared_clients() -> None:
    """Close the running loop's shared clients (before the loop ends: their sockets belong to it)."""
    for client in _shared.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


@dataclass(frozen=True)
class Reply:
    """A response whose body was read within the bounds; ``truncated`` when the rest was left unread."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    truncated: bool = False

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body as UTF-8 (what JSON, and every API here, sends); undecodable bytes replaced."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def snippet(self, limit: int = SNIPPET_CHARS) -> str:
        return shorten(self.text.strip(), limit)


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    truncate: bool = False,
    headers: httpx.Headers | dict[str, str] | None = None,
    until: Callable[[bytes], bool] | None = None,
    **request: Any,
) -> Reply:
    """One request within ``deadline`` seconds in all; at most ``max_bytes`` of body are read.

    A longer body raises ResponseTooLarge, or with ``truncate`` is cut there and the connection closed.
    ``until`` is asked after each chunk whether the body is complete, given its last UNTIL_TAIL_BYTES (a
    stream that ends with a closing message but may keep its connection open); once it says so, the
    rest is not read.
    An error status only ever becomes a message: its body is cut at MESSAGE_BODY_BYTES.
    The body is asked for and read without content coding: a compressed reply could inflate a thousand
    times past the cap within one chunk. Raises DeadlineExceeded, ResponseTooLarge, OutboundError or
    httpx.HTTPError (transport failures).
    """
    sent = httpx.Headers(headers)
    sent["Accept-Encoding"] = "identity"
    try:
        async with (
            asyncio.timeout(deadline),
            client.stream(method, url, headers=sent, timeout=deadline, **request) as response,
        ):
            coding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if coding not in ("", "identity"):
                raise OutboundError(f"{response.url.host} sent a {coding!r}-encoded body; identity was asked")
            if response.status_code >= 400:
                max_bytes, truncate = min(max_bytes, MESSAGE_BODY_BYTES), True
            body = bytearray()
            truncated = False
            async for chunk in response.aiter_raw():
                room = max_bytes - len(body)
                if len(chunk) > room:
                    if not truncate:
                        raise ResponseTooLarge(
                            f"{response.url.host} sent more than {describe_size(max_bytes)}, the most a "
                            "reply may have"
                        )
                    body += chunk[:room]
                    truncated = True
                    break
                body += chunk
                if until is not None and until(bytes(body[-UNTIL_TAIL_BYTES:])):
                    break
            return Reply(response.status_code, response.headers, bytes(body), truncated)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise DeadlineExceeded(f"no complete answer within {deadline:g}s") from exc


def describe(exc: BaseException) -> str:
    """An outbound failure in one bounded line: its type and message."""
    message = str(exc)
    if isinstance(exc, OutboundError):
        return shorten(message)
    return shorten(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def describe_size(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size} bytes"
