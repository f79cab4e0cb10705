"""Prometheus's instant-query HTTP API (``GET /api/v1/query``, as Flagger calls it) over the shared
bounded transport.

Not through prometheus-api-client: it is synchronous on ``requests``, whose timeout applies to each socket
read (a server sending a byte a second never reaches it) and which reads every body whole. Run in worker
threads, one slow Prometheus held the threads other Canaries' Kubernetes calls were queued for. Here a
query waits without a thread, within a hard deadline, for a capped body.
"""

from __future__ import annotations

import re
from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, credential_headers, parse_json, to_float
from canaryctl_providers.outbound import excerpt

ONLINE_QUERY = "vector(1)"
_SPACE = re.compile(r"\s+")


class PrometheusProvider:
    """Runs instant PromQL queries; the last sample of the result vector (or the scalar) is the value."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None = None) -> None:
        self._endpoint = Endpoint.from_spec(spec, credential_headers(spec, secret))
        self.address = self._endpoint.base_url

    async def query(self, query: str) -> float | None:
        promql = _SPACE.sub(" ", query).strip()
        try:
            reply = await self._endpoint.send("GET", "/api/v1/query", params={"query": promql})
        except MetricQueryError as exc:
            raise MetricQueryError(f"Prometheus {exc}", exc.status) from exc
        body = parse_json(reply)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or body.get("status") != "success":
            raise MetricQueryError(
                f"Prometheus {self.address} query {promql!r} failed: {excerpt(repr(body))}"
            )
        return _value(data.get("result"), promql)

    async def is_online(self) -> bool:
        try:
            return await self.query(ONLINE_QUERY) == 1.0
        except MetricQueryError:
            return False


def _value(result: Any, promql: str) -> float | None:
    """Scalar results are ``[ts, "v"]``; vectors are ``[{"metric", "value": [ts, "v"]}, ...]``."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return to_float(result[1])
    if not isinstance(result, list):
        raise MetricQueryError(f"unexpected Prometheus result for {promql!r}: {excerpt(repr(result))}")
    value: float | None = None
    for sample in result:
        if not isinstance(sample, dict) or not _is_pair(sample.get("value")):
            raise MetricQueryError(
                f"query {promql!r} did not return an instant vector: {excerpt(repr(sample))}"
            )
        value = to_float(sample["value"][1])
    return value


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2
