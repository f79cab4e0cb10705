"""Dynatrace Metrics API v2 against a local server: Flagger's request (metric selector, resolution Inf,
a window of ten intervals in epoch milliseconds, ``Api-Token`` auth) and a real-shaped answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from canaryctl.api.models import LocalObjectReference, MetricTemplateProvider
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, provider_for

SECRET = {"dynatrace_token": "dt0c01.SAMPLE.TOKEN"}
SELECTOR = 'builtin:service.response.time:filter(eq("dt.entity.service.name","podinfo")):avg'


def dynatrace(address: str) -> MetricTemplateProvider:
    return MetricTemplateProvider(
        type="dynatrace", address=address, secret_ref=LocalObjectReference(name="dynatrace")
    )


def answer(*values: float | None) -> dict[str, Any]:
    """The shape of GET /api/v2/metrics/query, one data entry per value."""
    data = [
        {
            "dimensions": [f"SERVICE-{index}"],
            "dimensionMap": {"dt.entity.service": f"SERVICE-{index}"},
            "timestamps": [1700000000000],
            "values": [value],
        }
        for index, value in enumerate(values)
    ]
    result = [
        {"metricId": SELECTOR, "dataPointCountRatio": 0.0001, "dimensionCountRatio": 0.01, "data": data}
    ]
    return {"totalCount": len(values), "nextPageKey": None, "resolution": "Inf", "result": result}


def test_query_request_and_value(fake_api: Any) -> None:
    # A Managed environment's address has a path (/e/<environment>); the API lives below it.
    fake_api.reply("GET", "/e/env1/api/v2/metrics/query", answer(10.0, 250.5))
    provider = provider_for(dynatrace(f"{fake_api.url}/e/env1"), SECRET, interval="2m")
    before = int(time.time() * 1000)
    assert asyncio.run(provider.query(SELECTOR)) == 250.5  # the last data entry's first value, as Flagger
    request = fake_api.last
    assert request.headers["authorization"] == "Api-Token dt0c01.SAMPLE.TOKEN"
    assert request.query["metricSelector"] == [SELECTOR]
    assert request.query["resolution"] == ["Inf"]
    start, end = int(request.query["from"][0]), int(request.query["to"][0])
    assert end - start == 10 * 120 * 1000
    assert before - 1000 <= end <= int(time.time() * 1000) + 1000


def test_no_data_and_errors(fake_api: Any) -> None:
    provider = provider_for(dynatrace(fake_api.url), SECRET)
    fake_api.reply("GET", "/api/v2/metrics/query", answer())
    assert asyncio.run(provider.query(SELECTOR)) is None
    fake_api.reply("GET", "/api/v2/metrics/query", answer(None))
    assert asyncio.run(provider.query(SELECTOR)) is None
    fake_api.reply(
        "GET",
        "/api/v2/metrics/query",
        {"error": {"code": 400, "message": "Cannot parse metric selector"}},
        status=400,
    )
    with pytest.raises(MetricQueryError, match="Cannot parse metric selector"):
        asyncio.run(provider.query("builtin:("))
    fake_api.reply("GET", "/api/v2/metrics/query", {"unexpected": True})
    with pytest.raises(MetricQueryError, match="unexpected Dynatrace response"):
        asyncio.run(provider.query(SELECTOR))


def test_is_online_lists_one_metric_with_the_token(fake_api: Any) -> None:
    provider = provider_for(dynatrace(fake_api.url), SECRET)
    fake_api.reply(
        "GET", "/api/v2/metrics", {"totalCount": 1, "nextPageKey": "x", "metrics": [{"metricId": "m"}]}
    )
    assert asyncio.run(provider.is_online()) is True
    assert fake_api.last.query["pageSize"] == ["1"]
    assert fake_api.last.headers["authorization"] == "Api-Token dt0c01.SAMPLE.TOKEN"
    fake_api.reply(
        "GET", "/api/v2/metrics", {"error": {"code": 401, "message": "Token required"}}, status=401
    )
    assert asyncio.run(provider.is_online()) is False


def test_configuration_errors(fake_api: Any) -> None:
    with pytest.raises(ProviderConfigError, match="address"):
        provider_for(dynatrace("").model_copy(update={"address": None}), SECRET)
    with pytest.raises(ProviderConfigError, match="dynatrace_token"):
        provider_for(dynatrace(fake_api.url), {"token": "x"})
