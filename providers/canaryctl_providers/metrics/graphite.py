"""Graphite render API: ``GET /render?<query>&format=json``, optional basic auth from the Secret."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, basic_auth, parse_json, to_float
from canaryctl_providers.outbound import excerpt

ONLINE_QUERY = "target=test"
_SPACE = re.compile(r"\s+")


class GraphiteProvider:
    """The query is the render URL's query string (``target=...&from=-5min``), as in Flagger.

    The value is the last non-null datapoint across the returned targets.
    """

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None) -> None:
        self._endpoint = Endpoint.from_spec(spec, basic_auth(spec, secret))

    async def query(self, query: str) -> float | None:
        params = parse_qsl(_SPACE.sub(" ", query).strip(), keep_blank_values=True)
        response = await self._endpoint.send("GET", "/render", params=(*params, ("format", "json")))
        return _last_value(parse_json(response))

    async def is_online(self) -> bool:
        try:
            await self.query(ONLINE_QUERY)
        except MetricQueryError:
            return False
        return True


def _last_value(body: Any) -> float | None:
    """Datapoints are ``[value, timestamp]`` pairs; a null value is a gap, not data."""
    if not isinstance(body, list):
        raise MetricQueryError(f"unexpected Graphite response: {excerpt(repr(body))}")
    value: float | None = None
    for target in body:
        points = target.get("datapoints") if isinstance(target, dict) else None
        for point in points or []:
            number = to_float(point[0]) if isinstance(point, list) and point else None
            value = value if number is None else number
    return value
