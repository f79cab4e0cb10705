"""TokenReview over the kubernetes client: how the xDS server learns which ServiceAccount a sidecar is."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from canaryctl_mesh.identity import ReviewUnavailable

REVIEW_TIMEOUT = 5.0


class KubeTokenReviewer:
    """`canaryctl_mesh.identity.TokenReviewer` against the API server (RBAC: create tokenreviews)."""

    def __init__(self, api: client.ApiClient, results: Counter | None = None) -> None:
        """`results` counts the answers by ``result``: authenticated, unauthenticated or error."""
        self.api = api
        self.results = results

    def _review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
        answer = client.AuthenticationV1Api(self.api).create_token_review(
            body, _request_timeout=REVIEW_TIMEOUT
        )
        status = answer.status
        if status is None:
            return {}
        user = status.user
        return {
            "authenticated": bool(status.authenticated),
            "audiences": status.audiences,
            "error": status.error,
            "user": {"username": user.username, "extra": user.extra or {}} if user is not None else {},
        }

    async def review(self, token: str, audiences: list[str]) -> Mapping[str, Any]:
        try:
            status = await asyncio.to_thread(self._review, token, audiences)
        except Exception as exc:
            self._count("error")
            raise ReviewUnavailable(f"TokenReview failed: {_reason(exc)}") from exc
        self._count("authenticated" if status.get("authenticated") else "unauthenticated")
        return status

    def _count(self, result: str) -> None:
        if self.results is not None:
            self.results.labels(result).inc()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"the API server answered {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:300]
