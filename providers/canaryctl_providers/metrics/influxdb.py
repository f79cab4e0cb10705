"""InfluxDB 2 Flux query API: ``POST /api/v2/query?org=...`` with ``Authorization: Token ...``.

The answer is CSV (one table after another, each with its own header row); the first record's
``_value`` is the value, as in Flagger. An ``error`` column in the CSV is an in-band query error.
"""

from __future__ import annotations

import csv
import io

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float

_DIALECT = {"header": True, "delimiter": ",", "annotations": []}


class InfluxDBProvider:
    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None) -> None:
        headers: dict[str, str] = {"Accept": "application/csv"}
        self._org: str | None = None
        if spec.secret_ref is not None:
            headers["Authorization"] = f"Token {require(secret, 'token', 'influxdb')}"
            self._org = require(secret, "org", "influxdb")
        self._endpoint = Endpoint.from_spec(spec, headers)

    async def query(self, query: str) -> float | None:
        params = {"org": self._org} if self._org else None
        body = {"query": query, "type": "flux", "dialect": _DIALECT}
        response = await self._endpoint.send("POST", "/api/v2/query", params=params, json_body=body)
        return first_value(response.text)

    async def is_online(self) -> bool:
        """``GET /health`` answers ``{"status": "pass"}`` when the server is ready."""
        try:
            body = parse_json(await self._endpoint.send("GET", "/health"))
        except MetricQueryError:
            return False
        return isinstance(body, dict) and body.get("status") == "pass"


def first_value(text: str) -> float | None:
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or all(cell == "" for cell in row):
            header = None
        elif row[0].startswith("#"):
            continue
        elif header is None:
            header = row
        elif "error" in header:
            raise MetricQueryError(f"InfluxDB query error: {row[header.index('error')]}")
        elif "_value" in header:
            return to_float(row[header.index("_value")] or None)
    return None
