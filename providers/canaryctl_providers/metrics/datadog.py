"""Datadog metrics query API (v1): ``GET /api/v1/query`` with API and application keys in headers."""

from __future__ import annotations

import time

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_mesh.duration import metric_interval_seconds
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float

DEFAULT_ADDRESS = "https://api.datadoghq.com"
# Flagger looks back ten intervals so sparse series still have a point.
LOOKBACK_INTERVALS = 10


class DatadogProvider:
    """The value is the first (oldest) point of the first series, as in Flagger: the newest bucket of
    the window is almost always incomplete. No series or no points means no data."""

    def __init__(
        self, spec: MetricTemplateProvider, secret: dict[str, str] | None, interval: str = "1m"
    ) -> None:
        keys = {
            "DD-API-KEY": require(secret, "datadog_api_key", "datadog"),
            "DD-APPLICATION-KEY": require(secret, "datadog_application_key", "datadog"),
        }
        self._endpoint = Endpoint.from_spec(spec, keys, DEFAULT_ADDRESS)
        self._lookback = int(LOOKBACK_INTERVALS * metric_interval_seconds(interval))

    async def query(self, query: str) -> float | None:
        now = int(time.time())
        params = {"query": query, "from": str(now - self._lookback), "to": str(now)}
        body = parse_json(await self._endpoint.send("GET", "/api/v1/query", params=params))
        if not isinstance(body, dict) or body.get("status") == "error":
            raise MetricQueryError(f"Datadog query failed: {body!r}"[:300])
        series = body.get("series") or [{}]
        points = series[0].get("pointlist") or []
        return to_float(points[0][1]) if points else None

    async def is_online(self) -> bool:
        try:
            body = parse_json(await self._endpoint.send("GET", "/api/v1/validate"))
        except MetricQueryError:
            return False
        return isinstance(body, dict) and body.get("valid") is True
