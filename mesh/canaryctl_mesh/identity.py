"""Who a sidecar is: the identity layer of the mesh's xDS server.

A sidecar proves which ServiceAccount it runs as with a projected ServiceAccount token (audience
`TOKEN_AUDIENCE`) sent as gRPC ``authorization: Bearer`` metadata; the API server vouches for it
through a TokenReview. The result is an `Identity` (namespace + ServiceAccount, and the pod a
projected token is bound to), the workload a SPIFFE ID names (``spiffe://<trust domain>/ns/<ns>/sa/
<sa>``): the xDS server hands a sidecar only its namespace's view, and a later workload-certificate
service can issue certificates for exactly this identity.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_AUDIENCE = "canaryctl-mesh"
"""Audience of the projected token; a token made for anything else (the API server) is refused."""
DEFAULT_TRUST_DOMAIN = "cluster.local"
"""The SPIFFE trust domain of the mesh's identities unless meshd is given another (`trust_domain`)."""
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_USER_PREFIX = "system:serviceaccount:"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
"""TokenReview ``user.extra`` key naming the pod a projected token is bound to."""


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    pod: str = ""
    """The pod a projected token is bound to; "" for tokens bound to no pod."""

    @classmethod
    def from_user(cls, user: Mapping[str, Any]) -> Identity:
        """A TokenReview's ``user``: ``system:serviceaccount:<namespace>:<name>``, else not a workload."""
        username = str(user.get("username") or "")
        namespace, _, name = username.removeprefix(_USER_PREFIX).partition(":")
        if not username.startswith(_USER_PREFIX) or not namespace or not name or ":" in name:
            raise Unauthenticated(f"{username!r} is not a ServiceAccount")
        pods = (user.get("extra") or {}).get(POD_NAME_EXTRA) or [""]
        return cls(namespace, name, str(pods[0]))

    def spiffe_id(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return f"{_USER_PREFIX}{self.namespace}:{self.service_account}"


def trust_domain(value: str) -> str:
    """`value` if it is a lowercase DNS name (as SPIFFE IDs and certificate URI SANs need), else
    ValueError saying why."""
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in value.split(".")):
        raise ValueError(
            f"trust domain {value!r} is not a DNS name: lowercase letters, digits and '-' in dot-separated "
            "labels of at most 63 characters, 253 in all"
        )
    return value


def workload_key(identity: Identity) -> str:
    """``<namespace>/<service account>``: the xDS snapshot key of one workload's sidecars, which no
    namespace or node id (``pod.namespace``) can equal."""
    return f"{identity.namespace}/{identity.service_account}"


class Unauthenticated(Exception):
    """The caller did not prove an identity; the message says why (it goes back to the caller)."""


class ReviewUnavailable(Exception):
    """No answer about a token could be had (the API server failed, timed out or is unreachable): not a
    refusal, so nothing is cached and the caller may retry. The message says why."""


class Authenticator(Protocol):
    async def authenticate(self, metadata: Mapping[str, str]) -> Identity:
        """The identity behind a stream's request metadata; raises Unauthenticated, or ReviewUnavailable
        when that cannot be told now."""
        ...


class TokenReviewer(Protocol):
    async def review(self, token: str, audiences: list[str]) -> Mapping[str, Any]:
        """The TokenReview ``status`` the API server answers for `token`; raises ReviewUnavailable when
        it gives none."""
        ...


MAX_TOKEN_BYTES = 16 * 1024


class TokenAuthenticator:
    """Bearer tokens checked by TokenReview, answers cached so reconnect storms do not reach the API.

    Positive answers are kept `ttl` seconds (a revoked token keeps working at most that long on new
    streams; open streams are not re-checked), refusals `refusal_ttl` seconds, at most `max_entries`
    tokens (by SHA-256, never the token itself).
    """

    def __init__(
        self,
        reviewer: TokenReviewer,
        audience: str = TOKEN_AUDIENCE,
        ttl: float = 300.0,
        refusal_ttl: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        self.reviewer = reviewer
        self.audience = audience
        self.ttl = ttl
        self.refusal_ttl = refusal_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, Identity | Unauthenticated]] = OrderedDict()

    async def authenticate(self, metadata: Mapping[str, str]) -> Identity:
        scheme, _, token = (metadata.get("authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("no bearer token: mount a projected ServiceAccount token")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("token too large")
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._cache.move_to_end(key)
            return self._result(cached[1])
        try:
            result: Identity | Unauthenticated = self._identity(
                await self.reviewer.review(token, [self.audience])
            )
        except Unauthenticated as refused:
            result = refused
        ttl = self.ttl if isinstance(result, Identity) else self.refusal_ttl
        self._cache[key] = (time.monotonic() + ttl, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return self._result(result)

    @staticmethod
    def _result(result: Identity | Unauthenticated) -> Identity:
        if isinstance(result, Unauthenticated):
            raise result
        return result

    def _identity(self, status: Mapping[str, Any]) -> Identity:
        if not status.get("authenticated"):
            raise Unauthenticated(f"token refused by the API server: {status.get('error') or 'not valid'}")
        audiences = status.get("audiences")
        if audiences is not None and self.audience not in audiences:
            raise Unauthenticated(f"token is not for audience {self.audience!r}")
        return Identity.from_user(status.get("user") or {})
