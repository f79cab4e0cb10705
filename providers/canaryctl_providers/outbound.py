"""Bounded HTTP for every call to an address a Canary, MetricTemplate or AlertProvider names.

Their authors are tenants, and so are the servers they point at. A server that drips one byte a second,
answers 150 MiB or never answers must cost only its own Canary a failed call: each exchange has a hard
deadline for the whole of it (connect, send, headers and body, not per read), the body is streamed and
capped, calls are limited per Canary, and no text a server sends reaches status, events or logs
unshortened.

Calls to one address share a keep-alive client per event loop (``shared_client``): a new connection per
call cost ~4 ms under load, a quarter of a busy operator's tick. Sharing gives no tenant more: the
per-Canary limits bound each one's calls, headers go with each request, and no cookie is ever kept.
At most MAX_SHARED_CLIENTS addresses keep a client; the least recently used one beyond that is closed.

No call reaches a link-local address or a cloud metadata service (``refusal``): the node's metadata
service hands the controller's cloud credentials to anyone who asks from the node. Every client is
built by ``new_client``, which checks the addresses a name resolves to when it connects and then
connects to the very address it checked, so no second lookup can answer differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import ipaddress
import json
import socket
import ssl
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
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
KEEPALIVE_PER_ADDRESS = 32
KEEPALIVE_SECONDS = 30.0
# Addresses with a keep-alive client per event loop; a tenant can name new addresses without end.
MAX_SHARED_CLIENTS = 256

# Where the clouds serve instance metadata and credentials, besides link-local addresses.
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
REFUSED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "a cloud metadata address"),
    (ipaddress.ip_network("100.100.100.200/32"), "a cloud metadata address"),
)


class OutboundError(Exception):
    """The exchange did not complete within its bounds."""


class DeadlineExceeded(OutboundError):
    pass


class ResponseTooLarge(OutboundError):
    pass


class DestinationRefused(OutboundError):
    """The address is one no tenant may reach: a link-local address or a cloud metadata service."""


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def excerpt(text: str, limit: int = SNIPPET_CHARS) -> str:
    """A remote server's text as a message may show it: one line of printable characters, shortened."""
    printable = "".join(char if char.isprintable() else " " for char in text)
    return shorten(" ".join(printable.split()), limit)


def kind_of(value: Any) -> str:
    """What a remote value is, without what it says (it may be a credential): its type and size."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} items"
    return f"a {type(value).__name__}"


def refusal(host: str) -> str | None:
    """Why no tenant's call may go to ``host`` (a name or an address), or None when it may."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata service"
    try:
        address = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network, what in REFUSED_NETWORKS:
        if address in network:
            return f"{address} is {what}"
    return None


def refuse(host: str) -> None:
    reason = refusal(host)
    if reason is not None:
        raise DestinationRefused(f"refused to connect: {reason}")


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def allowed_addresses(host: str, port: int) -> list[str]:
    """The addresses a call to ``host`` may connect to. A name with any refused address is refused
    whole: which of its addresses a connection would get is not the tenant's to choose."""
    refuse(host)
    addresses = await resolve(host, port)
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise DestinationRefused(f"refused to connect to {host}: {reason}")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses ``allowed_addresses`` returned, never to a name a later lookup resolves."""

    def __init__(self) -> None:
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in await allowed_addresses(host, port):
            try:
                return await self._network.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the next address may answer
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("refused to connect to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


async def _refuse_by_name(request: httpx.Request) -> None:
    """Through a proxy the proxy resolves the name: the name and a literal address are checked here."""
    refuse(request.url.host)


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


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that accepts no cookie: one tenant's server must not set what another's request sends."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


UNLIMITED = httpx.Limits(max_connections=None)


def new_client(
    verify: bool | ssl.SSLContext = True,
    *,
    limits: httpx.Limits = UNLIMITED,
    proxy: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client for addresses tenants name: no cookie jar, no link-local or metadata address.

    No connection limit by default: one Canary's hanging calls must not use up a pool another's share.
    """
    client = httpx.AsyncClient(
        verify=ssl_context(verify) if isinstance(verify, bool) else verify,
        limits=limits,
        proxy=proxy,
        headers=headers,
        cookies=_no_cookies(),
        event_hooks={"request": [_refuse_by_name]},
    )
    # httpx takes no network backend; its pools (direct, and to each proxy, the environment's included)
    # connect through ours. A mount of None is a NO_PROXY host: it uses the direct pool.
    for transport in (client._transport, *client._mounts.values()):
        if transport is None:
            continue
        if not isinstance(transport, httpx.AsyncHTTPTransport):
            raise TypeError(f"cannot guard the connections of {type(transport).__name__}")
        transport._pool._network_backend = GuardedBackend()
    return client


Origin = tuple[str, str, int | None, bool]  # scheme, host, port, verify TLS


@dataclass
class _Shared:
    """A shared client and the calls using it now: an evicted client is closed once they are done."""

    client: httpx.AsyncClient
    users: int = 0
    evicted: bool = False


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[Origin, _Shared]] = (
    weakref.WeakKeyDictionary()
)
_closing: set[asyncio.Task[None]] = set()


def _close_later(client: httpx.AsyncClient) -> None:
    task = asyncio.get_running_loop().create_task(client.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


@contextlib.asynccontextmanager
async def shared_client(url: str, verify: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The keep-alive client of ``url``'s scheme, host and port in the running event loop (an httpx
    client belongs to the loop it first ran in), held for one call.

    The MAX_SHARED_CLIENTS most recently used addresses keep theirs; an evicted client is closed when
    the last call holding it ends, never under a call.
    """
    parsed = httpx.URL(url)
    origin = (parsed.scheme, parsed.host, parsed.port, verify)
    clients = _shared.setdefault(asyncio.get_running_loop(), OrderedDict())
    shared = clients.get(origin)
    if shared is None or shared.client.is_closed:
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=KEEPALIVE_PER_ADDRESS,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        shared = clients[origin] = _Shared(new_client(verify, limits=limits))
    clients.move_to_end(origin)
    while len(clients) > MAX_SHARED_CLIENTS:
        _, oldest = clients.popitem(last=False)
        oldest.evicted = True
        if oldest.users == 0:
            _close_later(oldest.client)
    shared.users += 1
    try:
        yield shared.client
    finally:
        shared.users -= 1
        if shared.evicted and shared.users == 0:
            _close_later(shared.client)


def shared_clients() -> int:
    """How many addresses keep a client in the running event loop."""
    return len(_shared.get(asyncio.get_running_loop(), ()))


async def close_shared_clients() -> None:
    """Close the running loop's shared clients (before the loop ends: their sockets belong to it)."""
    loop = asyncio.get_running_loop()
    for shared in _shared.pop(loop, {}).values():
        await shared.client.aclose()
    closing = {task for task in _closing if task.get_loop() is loop}
    if closing:
        await asyncio.wait(closing)


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
        return excerpt(self.text, limit)


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
