"""ServiceAccount tokens checked with the Kubernetes TokenReview API: ``system:serviceaccount:NS:NAME``
calls for namespace ``NS``. Kept apart from ``auth`` so the kubernetes client is only imported (a
second of start-up on a busy node) by a load tester that uses it."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from canaryctl.loadtester.auth import Denied, Identity, token_hash
from canaryctl_mesh.kube import api_client

REVIEW_TIMEOUT_SECONDS = 5.0
REVIEW_CONCURRENCY = 4
REVIEW_CACHE_ENTRIES = 1024
REVIEW_CACHE_SECONDS = 60.0  # a revoked ServiceAccount token is refused at most this long after
REVIEW_NEGATIVE_CACHE_SECONDS = 10.0  # a wrong token does not cost one API call per request
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class _Cache:
    """A small LRU of review results keyed by token hash, each entry with its own expiry."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._data: OrderedDict[str, tuple[float, Identity | Denied]] = OrderedDict()

    def get(self, key: str) -> Identity | Denied | None:
        found = self._data.get(key)
        if found is None or found[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return found[1]

    def put(self, key: str, value: Identity | Denied, seconds: float) -> None:
        self._data[key] = (time.monotonic() + seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self._entries:
            self._data.popitem(last=False)


class TokenReviewer:
    """ServiceAccount tokens checked with the API server's TokenReview (needs ``create tokenreviews``).

    ``audiences``: the audiences a token must be issued for (``kubectl create token --audience``);
    empty accepts the API server's own, which is what a ServiceAccount token Secret holds.
    """

    def __init__(self, api: client.ApiClient, audiences: Sequence[str] = ()) -> None:
        self._api = client.AuthenticationV1Api(api)
        self._audiences = list(audiences)
        self._cache = _Cache(REVIEW_CACHE_ENTRIES)
        self._slots = asyncio.Semaphore(REVIEW_CONCURRENCY)

    async def identify(self, token: str) -> Identity | None:
        key = token_hash(token)
        cached = self._cache.get(key)
        if cached is None:
            try:
                cached = await self._review(token)
            except Denied as denied:
                if denied.status != 503:  # an API outage is not remembered against the token
                    self._cache.put(key, denied, REVIEW_NEGATIVE_CACHE_SECONDS)
                raise
            self._cache.put(key, cached, REVIEW_CACHE_SECONDS)
        if isinstance(cached, Denied):
            raise cached
        return cached

    async def _review(self, token: str) -> Identity:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=self._audiences))
        async with self._slots:
            try:
                reviewed: Any = await asyncio.wait_for(
                    asyncio.to_thread(
                        self._api.create_token_review, body, _request_timeout=REVIEW_TIMEOUT_SECONDS
                    ),
                    REVIEW_TIMEOUT_SECONDS + 1,
                )
            except (ApiException, HTTPError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                raise Denied(503, f"cannot verify the token with the API server: {reason}") from exc
        status = reviewed.status
        if status is None or not status.authenticated:
            raise Denied(401, "the token is not valid")
        username = status.user.username if status.user is not None else ""
        if self._audiences and not set(self._audiences) & set(status.audiences or []):
            raise Denied(401, f"the token is not issued for audience {', '.join(self._audiences)}")
        if not username.startswith(SERVICE_ACCOUNT_PREFIX):
            raise Denied(403, f"{username} is not a ServiceAccount: only those name a namespace")
        namespace = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        return Identity(namespace, username)


def in_cluster_reviewer(audiences: Sequence[str] = ()) -> TokenReviewer:
    """A reviewer with the pod's own credentials (or the kubeconfig); ValueError when there are none."""
    try:
        return TokenReviewer(api_client(), audiences)
    except config.ConfigException as exc:
        raise ValueError(f"no Kubernetes credentials for TokenReview: {exc}") from exc
