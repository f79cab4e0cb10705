"""Calls a Canary's webhooks with Flagger's payload, so Flagger's loadtester and existing gates keep working.

A webhook failure is an observation the engine acts on (hold, roll back, wait), never an exception: every
transport error, timeout or non-2xx answer comes back as a failed ``HookResult``.

A hook's server is its Canary author's: each attempt has a hard deadline (the hook's ``timeout``), only
the start of the reply is read, and one Canary has at most ``concurrency`` calls in flight; the shared
client sets no connection limit another tenant's hanging hooks could use up, keeps no cookie one hook's
server could set for another's, and connects to no link-local or metadata address (``outbound.new_client``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from canaryctl.api.models import Canary, CanaryWebhook, Phase
from canaryctl.engine.types import HookResult
from canaryctl_mesh.duration import parse_duration
from canaryctl_providers.metrics.analyzer import SecretLookup
from canaryctl_providers.outbound import (
    HOOKS_PER_CANARY,
    MESSAGE_BODY_BYTES,
    DeadlineExceeded,
    DestinationRefused,
    OutboundError,
    Slots,
    canary_key,
    describe,
    fetch,
    new_client,
    shorten,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
# Flagger counts 200, 201 and 202 as success; anything else (including other 2xx) is a failure.
SUCCESS_CODES = range(200, 203)
# Retried answers: the receiver is overloaded or broken, not saying "no" (a 403 from a gate is an answer).
RETRIED_CODES = frozenset({429, 500, 502, 503, 504})
# The key of a webhook's secretRef sent as a bearer token; a ServiceAccount token Secret has it too.
TOKEN_KEY = "token"
USER_AGENT = {"User-Agent": "canaryctl"}

HookObserver = Callable[[Canary, CanaryWebhook, HookResult, float], None]


def payload(
    canary: Canary, phase: Phase | None, checksum: str | None, metadata: dict[str, str] | None
) -> dict[str, Any]:
    """Flagger's CanaryWebhookPayload."""
    return {
        "name": canary.metadata.name or "",
        "namespace": canary.metadata.namespace or "",
        "phase": phase.value if phase is not None else "",
        "checksum": checksum or "",
        "metadata": dict(metadata or {}),
    }


def event_metadata(
    hook: CanaryWebhook, message: str, warning: bool, now_ms: int | None = None
) -> dict[str, str]:
    """Event metadata as Flagger sends it; the hook's own metadata never overrides the event keys."""
    event = {
        "eventMessage": message,
        "eventType": "Warning" if warning else "Normal",
        "timestamp": str(now_ms if now_ms is not None else int(time.time() * 1000)),
    }
    return {**(hook.metadata or {}), **event}


def _describe(exc: BaseException) -> str:
    """The innermost cause, so an error raised inside a task group reads as itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return shorten(f"{type(exc).__name__}: {exc}")


class WebhookClient:
    """The ``Hooks`` port over httpx: a deadline per attempt, bounded exponential backoff between them."""

    def __init__(
        self,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        observe: HookObserver | None = None,
        concurrency: int = HOOKS_PER_CANARY,
        secrets: SecretLookup | None = None,
    ) -> None:
        self._client = new_client(headers=USER_AGENT)
        # For hooks with disableTLS only: a client of its own, so no connection it opened without
        # checking a certificate is ever reused for a hook that checks.
        self._unverified: httpx.AsyncClient | None = None
        self._slots = Slots(concurrency)
        self._secrets = secrets
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._observe = observe

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._unverified is not None:
            await self._unverified.aclose()

    def _client_for(self, hook: CanaryWebhook) -> httpx.AsyncClient:
        """Flagger's disableTLS: this hook's server certificate is not checked; every other hook's is."""
        if not hook.disable_tls:
            return self._client
        if self._unverified is None:
            self._unverified = new_client(False, headers=USER_AGENT)
        return self._unverified

    async def call(
        self, canary: Canary, hook: CanaryWebhook, phase: Phase | None, checksum: str | None
    ) -> HookResult:
        return await self._post(canary, hook, payload(canary, phase, checksum, hook.metadata))

    async def event(
        self, canary: Canary, hook: CanaryWebhook, phase: Phase | None, message: str, warning: bool
    ) -> HookResult:
        checksum = canary.status.last_applied_spec if canary.status else None
        body = payload(canary, phase, checksum, event_metadata(hook, message, warning))
        return await self._post(canary, hook, body)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): base·2^(n-1), capped."""
        return float(min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    async def _headers(self, canary: Canary, hook: CanaryWebhook) -> dict[str, str]:
        """The bearer token of the hook's secretRef, read from the Canary's own namespace only: a Canary
        can present its own namespace's token, never another's."""
        if hook.secret_ref is None:
            return {}
        if self._secrets is None:
            raise LookupError("secretRef needs Kubernetes Secrets, which this platform does not have")
        namespace = canary.metadata.namespace or "default"
        token = (await self._secrets(hook.secret_ref.name, namespace)).get(TOKEN_KEY, "").strip()
        if not token:
            raise LookupError(f"Secret {namespace}/{hook.secret_ref.name} has no key {TOKEN_KEY!r}")
        return {"Authorization": f"Bearer {token}"}

    async def _post(self, canary: Canary, hook: CanaryWebhook, body: dict[str, Any]) -> HookResult:
        started = time.monotonic()
        try:
            headers = await self._headers(canary, hook)
        except Exception as exc:  # a missing Secret fails this hook, like any other hook error
            result = self._failed(hook, None, f"secretRef: {_describe(exc)}")
        else:
            result = await self._attempts(canary, hook, body, headers)
        if self._observe is not None:
            self._observe(canary, hook, result, time.monotonic() - started)
        return result

    async def _attempts(
        self, canary: Canary, hook: CanaryWebhook, body: dict[str, Any], headers: dict[str, str]
    ) -> HookResult:
        timeout = parse_duration(hook.timeout) if hook.timeout else DEFAULT_TIMEOUT_SECONDS
        attempts = 1 + (hook.retries or 0)
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.backoff(attempt - 1))
            async with self._slots(canary_key(canary)):
                result, retryable = await self._attempt(hook, body, timeout, headers)
            if result.success or not retryable:
                break
            log.info("webhook %s attempt %d/%d failed: %s", hook.name, attempt, attempts, result.message)
        if attempt > 1 and not result.success:
            result = replace(result, message=f"{result.message} (after {attempt} attempts)")
        return result

    async def _attempt(
        self, hook: CanaryWebhook, body: dict[str, Any], timeout: float, headers: dict[str, str]
    ) -> tuple[HookResult, bool]:
        """One POST; returns the result and whether a retry could change it."""
        try:
            reply = await fetch(
                self._client_for(hook),
                "POST",
                hook.url,
                json=body,
                headers=headers,
                deadline=timeout,
                max_bytes=MESSAGE_BODY_BYTES,
                truncate=True,
            )
        except DeadlineExceeded:
            return self._failed(hook, None, f"timed out after {timeout:g}s"), True
        except DestinationRefused as exc:
            return self._failed(hook, None, describe(exc)), False
        except (httpx.HTTPError, OutboundError) as exc:
            return self._failed(hook, None, describe(exc)), True
        except Exception as exc:  # the Hooks port never raises: a malformed URL is a failed hook too
            return self._failed(hook, None, _describe(exc)), False
        text = reply.snippet()
        code = reply.status_code
        if code in SUCCESS_CODES:
            return HookResult(hook.name, hook.type, True, code, text), False
        message = f"HTTP {code}: {text}" if text else f"HTTP {code}"
        return self._failed(hook, code, message), code in RETRIED_CODES

    @staticmethod
    def _failed(hook: CanaryWebhook, code: int | None, message: str) -> HookResult:
        return HookResult(
            name=hook.name, type=hook.type, success=False, status_code=code, message=shorten(message)
        )
