"""New Relic Insights query API: ``GET /v1/accounts/<id>/query?nrql=...`` with an ``X-Query-Key``."""

from __future__ import annotations

from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_mesh.duration import metric_interval_seconds
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float
from canaryctl_providers.outbound import excerpt

DEFAULT_ADDRESS = "https://insights-api.newrelic.com"
ONLINE_QUERY = "SELECT count(*) FROM Metric"


class NewRelicProvider:
    """Appends ``SINCE <interval> seconds ago`` as Flagger does; reads the single result's value."""

    def __init__(
        self, spec: MetricTemplateProvider, secret: dict[str, str] | None, interval: str = "1m"
    ) -> None:
        account = require(secret, "newrelic_account_id", "newrelic")
        key = require(secret, "newrelic_query_key", "newrelic")
        self._endpoint = Endpoint.from_spec(spec, {"X-Query-Key": key}, DEFAULT_ADDRESS)
        self._path = f"/v1/accounts/{account}/query"
        self._since = int(metric_interval_seconds(interval))

    async def query(self, query: str) -> float | None:
        return _result(await self._run(f"{query} SINCE {self._since} seconds ago"))

    async def is_online(self) -> bool:
        try:
            await self._run(ONLINE_QUERY)
        except MetricQueryError:
            return False
        return True

    async def _run(self, nrql: str) -> Any:
        return parse_json(await self._endpoint.send("GET", self._path, params={"nrql": nrql}))


def _result(body: Any) -> float | None:
    """``{"results": [{"result": v}]}``; any single-valued function name (``average``...) is accepted."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise MetricQueryError(f"unexpected New Relic response: {excerpt(repr(body))}")
    if len(results) != 1 or not isinstance(results[0], dict) or not results[0]:
        return None
    first = results[0]
    if "result" in first:
        return to_float(first["result"])
    if len(first) != 1:
        raise MetricQueryError(
            f"New Relic result has several values, name one 'result': {excerpt(repr(first))}"
        )
    return to_float(next(iter(first.values())))
