"""How a failed tick is retried and reported: when the API server throttles, the operator waits as long
as it asks; a failure that persists reads the same on every attempt, so it is written once."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from canaryctl.operator.handlers import (
    MAX_RETRY_AFTER_SECONDS,
    RETRY_SECONDS,
    failure_message,
    retry_delay,
)
from canaryctl.runner import ActionFailed


def answer(status: int, reason: str, headers: dict[str, str], message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.headers = headers
    error.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return error


def wrapped(error: ApiException) -> ActionFailed:
    """As the runner raises it: the API server's answer is the cause."""
    try:
        raise ActionFailed("SetRoutes RouteState(canary_weight=20)") from error
    except ActionFailed as failed:
        return failed


def test_a_throttled_tick_waits_for_retry_after_even_inside_an_action() -> None:
    throttled = answer(429, "Too Many Requests", {"Retry-After": "7"}, "too many requests")
    assert retry_delay(throttled, interval=60) == 7
    assert retry_delay(wrapped(throttled), interval=60) == 7
    endless = answer(429, "Too Many Requests", {"Retry-After": "86400"}, "too many requests")
    assert retry_delay(endless, interval=60) == MAX_RETRY_AFTER_SECONDS


def test_other_failures_are_retried_within_half_an_interval() -> None:
    down = answer(503, "Service Unavailable", {}, "the server is currently unable to handle the request")
    assert retry_delay(down, interval=2) == 1
    assert retry_delay(down, interval=60) == RETRY_SECONDS
    assert retry_delay(RuntimeError("no data"), interval=4) == 2


def test_the_same_failure_reads_the_same_whatever_its_answers_headers() -> None:
    message = "forbidden: cannot patch services in the namespace shop"
    first = answer(403, "Forbidden", {"Date": "Mon, 30 Nov 2026 18:57:08 GMT"}, message)
    second = answer(403, "Forbidden", {"Date": "Mon, 30 Nov 2026 18:57:09 GMT"}, message)
    assert str(first) != str(second)  # what was reported before: a new message on every attempt
    assert failure_message(wrapped(first)) == failure_message(wrapped(second))
    assert failure_message(wrapped(first)).endswith(f"Forbidden: {message}")
    assert "\n" not in failure_message(first)
