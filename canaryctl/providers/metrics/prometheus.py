"""Prometheus through prometheus-api-client, as the issue asks.

The client is synchronous (requests), so each query runs in a worker thread. It takes headers, basic
auth, TLS skip and a timeout natively; its default retries (with back-off) are turned off so a dead
Prometheus is reported within one timeout instead of after several back-offs.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from canaryctl.api.models import MetricTemplateProvider
from canaryctl.providers.metrics.errors import MetricQueryError
from canaryctl.providers.metrics.transport import (
    DEFAULT_TIMEOUT,
    base_address,
    credential_headers,
    custom_headers,
    to_float,
)

ONLINE_QUERY = "vector(1)"
_SPACE = re.compile(r"\s+")


class PrometheusProvider:
    """Runs instant PromQL queries; the last sample of the result vector (or the scalar) is the value."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None = None) -> None:
        self.address = base_address(spec)
        headers: dict[str, str] = {}
        for name, value in custom_headers(spec):
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers.update(credential_headers(spec, secret))
        if spec.insecure_skip_verify:
            # Asked for explicitly; without this urllib3 warns on every single query.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._client = PrometheusConnect(
            url=self.address,
            headers=headers,
            disable_ssl=spec.insecure_skip_verify,
            retry=Retry(total=0, raise_on_status=False),
            timeout=int(DEFAULT_TIMEOUT),
        )

    async def query(self, query: str) -> float | None:
        promql = _SPACE.sub(" ", query).strip()
        result = await asyncio.to_thread(self._run, promql)
        return _value(result, promql)

    async def is_online(self) -> bool:
        try:
            return await self.query(ONLINE_QUERY) == 1.0
        except MetricQueryError:
            return False

    def _run(self, promql: str) -> Any:
        try:
            return self._client.custom_query(promql)
        except (requests.RequestException, PrometheusApiClientException, ValueError, KeyError) as exc:
            raise MetricQueryError(f"Prometheus {self.address} query {promql!r} failed: {exc}") from exc


def _value(result: Any, promql: str) -> float | None:
    """Scalar results are ``[ts, "v"]``; vectors are ``[{"metric", "value": [ts, "v"]}, ...]``."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return to_float(result[1])
    if not isinstance(result, list):
        raise MetricQueryError(f"unexpected Prometheus result for {promql!r}: {result!r}")
    value: float | None = None
    for sample in result:
        if not isinstance(sample, dict) or "value" not in sample:
            raise MetricQueryError(f"query {promql!r} did not return an instant vector: {sample!r}")
        value = to_float(sample["value"][1])
    return value
