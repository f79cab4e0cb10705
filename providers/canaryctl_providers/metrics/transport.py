"""The HTTP plumbing every provider shares: address, credentials, headers, TLS, bounds and error mapping.

Provider modules only say what to send and how to read the answer; a failure anywhere here surfaces as
a MetricQueryError so the analyzer can report it and never mistake it for a value. Every request stays
on the provider's own address (credentials go nowhere else), completes within DEFAULT_TIMEOUT seconds
in all, and reads at most MAX_RESPONSE_BYTES of body. Requests to one address reuse its keep-alive
connections (``outbound.shared_client``); headers and credentials go with each request, never with
the client. A request with TLS settings of its own (``tls``: the Kubernetes API's, with or without
the controller's client certificate) gets a client of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.outbound import (
    MAX_RESPONSE_BYTES,
    OutboundError,
    Reply,
    describe,
    fetch,
    kind_of,
    new_client,
    shared_client,
    shorten,
)

# Flagger's query timeout, here a hard deadline for the whole exchange.
DEFAULT_TIMEOUT = 5.0


def require(secret: dict[str, str] | None, key: str, kind: str) -> str:
    """A credential the provider cannot work without, with an error naming the missing Secret key."""
    value = (secret or {}).get(key)
    if not value:
        raise ProviderConfigError(f"{kind} credentials do not contain the key {key!r}")
    return value


def credential_headers(spec: MetricTemplateProvider, secret: dict[str, str] | None) -> dict[str, str]:
    """Flagger's rule: a Secret's ``token`` means bearer auth, else ``username``/``password`` basic auth."""
    if spec.secret_ref is None:
        return {}
    if secret and secret.get("token"):
        return {"Authorization": f"Bearer {secret['token']}"}
    return basic_auth(spec, secret)


def basic_auth(spec: MetricTemplateProvider, secret: dict[str, str] | None) -> dict[str, str]:
    """Basic auth from the Secret's ``username``/``password``; nothing without a secretRef."""
    if spec.secret_ref is None:
        return {}
    username = require(secret, "username", spec.type)
    password = require(secret, "password", spec.type)
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def custom_headers(spec: MetricTemplateProvider) -> list[tuple[str, str]]:
    """``spec.provider.headers`` as header pairs; a list value sends the header once per item."""
    pairs: list[tuple[str, str]] = []
    for name, value in (spec.headers or {}).items():
        pairs.extend((name, item) for item in ([value] if isinstance(value, str) else value))
    return pairs


def base_address(spec: MetricTemplateProvider, default: str | None = None) -> str:
    address = (spec.address or default or "").rstrip("/")
    if not address.startswith(("http://", "https://")):
        raise ProviderConfigError(f"{spec.type} address {spec.address!r} is not a valid http(s) URL")
    return address


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one provider's API; ``headers`` already hold custom and auth headers."""

    base_url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    verify: bool = True
    timeout: float = DEFAULT_TIMEOUT
    # A TLS context of its own (a cluster's CA, a client certificate) instead of the shared ones.
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_spec(
        cls,
        spec: MetricTemplateProvider,
        extra_headers: dict[str, str] | None = None,
        default_address: str | None = None,
    ) -> Endpoint:
        headers = custom_headers(spec) + list((extra_headers or {}).items())
        return cls(base_address(spec, default_address), headers, not spec.insecure_skip_verify)

    def url_for(self, path: str) -> str:
        """``path`` below the base address. A path that would leave the provider's scheme, host or port
        (``@other``, an absolute URL, ``//other``) is refused: credentials only go to this address."""
        base = httpx.URL(self.base_url)
        if path and not path.startswith(("/", "?")):
            raise MetricQueryError(f"path {shorten(path, 100)!r} must start with '/'")
        url = httpx.URL(self.base_url + path)
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise MetricQueryError(f"path {shorten(path, 100)!r} leaves the provider address {self.base_url}")
        return str(url)

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | tuple[tuple[str, str], ...] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        until: Callable[[bytes], bool] | None = None,
    ) -> Reply:
        """One request; transport failures, the bounds and HTTP statuses >= 400 become MetricQueryError.
        ``until`` ends the read early once the body so far holds all that is needed (a stream)."""
        url = self.url_for(path)
        all_headers = httpx.Headers(self.headers)
        all_headers.update(headers or {})
        try:
            async with contextlib.AsyncExitStack() as stack:
                # Own TLS settings (the controller's certificate) never share a connection.
                client = await stack.enter_async_context(
                    shared_client(self.base_url, self.verify) if self.tls is None else new_client(self.tls)
                )
                reply = await fetch(
                    client,
                    method,
                    url,
                    deadline=self.timeout,
                    max_bytes=MAX_RESPONSE_BYTES,
                    params=params,
                    json=json_body,
                    content=content,
                    headers=all_headers,
                    until=until,
                )
        except (httpx.HTTPError, OutboundError) as exc:
            raise MetricQueryError(f"{method} {url} failed: {describe(exc)}") from exc
        if reply.status_code >= 400:
            raise MetricQueryError(
                f"{method} {url} answered HTTP {reply.status_code}: {reply.snippet()}", reply.status_code
            )
        return reply


def parse_json(reply: Reply) -> Any:
    try:
        return reply.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetricQueryError(f"response is not JSON: {reply.snippet()!r}") from exc


def to_float(value: Any) -> float | None:
    """A number from a JSON value (numbers or numeric strings); null and NaN mean no data. Any other
    value is an error that says what kind of value it is, not what it says (a credential, perhaps)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MetricQueryError(f"value is not a number but {kind_of(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        # What the value says stays out: an address can answer with a credential.
        raise MetricQueryError(f"value is not a number but {kind_of(value)}") from None
    return None if math.isnan(number) else number
