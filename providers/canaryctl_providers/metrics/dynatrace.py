"""Dynatrace Metrics API v2: ``GET /api/v2/metrics/query?metricSelector=...`` with an API token."""

from __future__ import annotations

import time
from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_mesh.duration import metric_interval_seconds
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float
from canaryctl_providers.outbound import excerpt

QUERY_PATH = "/api/v2/metrics/query"
# Flagger's window: ten metric intervals back from now, one value over all of it (resolution Inf).
LOOKBACK_INTERVALS = 10


class DynatraceProvider:
    """The value is the first value of the last data entry of the first result, as in Flagger."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None, interval: str) -> None:
        if not spec.address:
            raise ProviderConfigError("dynatrace needs spec.provider.address, the environment's URL")
        token = require(secret, "dynatrace_token", "dynatrace")
        self._endpoint = Endpoint.from_spec(spec, {"Authorization": f"Api-Token {token}"})
        self._lookback_ms = int(LOOKBACK_INTERVALS * metric_interval_seconds(interval) * 1000)

    async def query(self, query: str) -> float | None:
        now = int(time.time() * 1000)
        params = {
            "metricSelector": query,
            "resolution": "Inf",
            "from": str(now - self._lookback_ms),
            "to": str(now),
        }
        return _value(parse_json(await self._endpoint.send("GET", QUERY_PATH, params=params)))

    async def is_online(self) -> bool:
        """The token may list metrics (Flagger's check)."""
        try:
            await self._endpoint.send("GET", "/api/v2/metrics", params={"pageSize": "1"})
        except MetricQueryError:
            return False
        return True


def _value(body: Any) -> float | None:
    """``{"result": [{"metricId", "data": [{"dimensions", "timestamps", "values"}]}]}``."""
    results = body.get("result") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise MetricQueryError(f"unexpected Dynatrace response: {excerpt(repr(body))}")
    data = results[0].get("data") if results and isinstance(results[0], dict) else None
    if not data or not isinstance(data[-1], dict):
        return None
    values = data[-1].get("values") or []
    return to_float(values[0]) if values else None
