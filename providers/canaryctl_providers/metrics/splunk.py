"""Splunk Observability (SignalFx) SignalFlow: ``POST /v2/signalflow/execute`` on the realm's stream
host, answered as Server-Sent Events, with the access token in ``X-SF-Token``.

Flagger runs the same computation over SignalFlow's WebSocket; the HTTP form is the same API with one
request per computation, so it goes through the bounded fetch like every other query.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_mesh.duration import metric_interval_seconds
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float

EXECUTE_PATH = "/v2/signalflow/execute"
# Flagger's window: ten metric intervals back from now.
LOOKBACK_INTERVALS = 10
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_CLOSING_CONTROL = (b"END_OF_CHANNEL", b"CHANNEL_ABORT")


def realm_addresses(address: str) -> tuple[str, str]:
    """(REST API, SignalFlow stream) base URLs for a template address, as Flagger derives them: a
    host ``api.<realm>...`` streams from ``stream.<realm>...`` and the other way round; ``ws(s)``
    schemes become ``http(s)``. Any other host serves both."""
    url = httpx.URL(address)
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    if scheme not in ("http", "https") or not url.host:
        raise ProviderConfigError(f"splunk address {address[:100]!r} is not a valid http(s) or ws(s) URL")
    first, _, realm = url.host.partition(".")
    hosts = (f"api.{realm}", f"stream.{realm}") if first in ("api", "stream") and realm else (url.host,) * 2
    port = f":{url.port}" if url.port else ""
    path = url.path.rstrip("/")
    api, stream = (f"{scheme}://{host}{port}{path}" for host in hosts)
    return api, stream


class SplunkProvider:
    """The value is the last non-null point of the one time series the program publishes."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None, interval: str) -> None:
        if not spec.address:
            raise ProviderConfigError(
                "splunk needs spec.provider.address, e.g. https://api.<REALM>.signalfx.com"
            )
        token = {"X-SF-Token": require(secret, "sf_token_key", "splunk")}
        api, stream = realm_addresses(spec.address)
        self._api = Endpoint.from_spec(spec.model_copy(update={"address": api}), token)
        self._stream = Endpoint.from_spec(spec.model_copy(update={"address": stream}), token)
        self._lookback_ms = int(LOOKBACK_INTERVALS * metric_interval_seconds(interval) * 1000)

    async def query(self, query: str) -> float | None:
        now = int(time.time() * 1000)
        params = {"start": str(now - self._lookback_ms), "stop": str(now), "immediate": "true"}
        reply = await self._stream.send(
            "POST",
            EXECUTE_PATH,
            params=params,
            content=query.encode(),
            headers={"Content-Type": "text/plain", "Accept": "text/event-stream"},
            until=_closed,
        )
        return _value(reply.text)

    async def is_online(self) -> bool:
        """The token may read metric metadata (Flagger's check)."""
        try:
            parse_json(await self._api.send("GET", "/v2/metric", params={"limit": "1"}))
        except MetricQueryError:
            return False
        return True


def _closed(tail: bytes) -> bool:
    """The stream's last complete event ends the computation: END_OF_CHANNEL, CHANNEL_ABORT or error."""
    if not tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
        return False
    blocks = [block for block in _BLANK_LINE.split(tail) if block.strip()]
    if not blocks:
        return False
    last = blocks[-1].lstrip()
    if last.startswith((b"event: error", b"event:error")):
        return True
    return last.startswith((b"event: control-message", b"event:control-message")) and any(
        marker in last for marker in _CLOSING_CONTROL
    )


def server_sent_events(text: str) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event: ``field: value`` lines, a blank line ends an event,
    several ``data`` lines join with newlines, lines starting with ``:`` are comments."""
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", text):
        event, data = "message", []
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            yield event, "\n".join(data)


def _message(event: str, data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        message = None
    if not isinstance(message, dict):
        raise MetricQueryError(
            f"SignalFlow sent a {event[:40]!r} event that is not a JSON object: {data[:200]!r}"
        )
    return message


def _value(stream: str) -> float | None:
    points: list[tuple[Any, Any]] = []
    for event, data in server_sent_events(stream):
        message = _message(event, data)
        if event == "error":
            raise MetricQueryError(f"SignalFlow error: {json.dumps(message.get('errors'))[:300]}")
        if event == "control-message" and message.get("event") == "CHANNEL_ABORT":
            raise MetricQueryError(
                f"SignalFlow aborted the computation: {json.dumps(message.get('abortInfo'))[:300]}"
            )
        if event == "control-message" and message.get("event") == "END_OF_CHANNEL":
            break
        if event == "data":
            data_points = message.get("data") or []
            if not isinstance(data_points, list):
                raise MetricQueryError(f"SignalFlow data is not a list: {data[:200]!r}")
            points.extend(
                (point.get("tsId"), point.get("value"))
                for point in data_points
                if isinstance(point, dict) and point.get("value") is not None
            )
    else:
        raise MetricQueryError("SignalFlow stream ended before the computation did (no END_OF_CHANNEL)")
    series = {tsid for tsid, _ in points}
    if len(series) > 1:
        raise MetricQueryError(f"the SignalFlow program published {len(series)} time series; publish one")
    return to_float(points[-1][1]) if points else None
