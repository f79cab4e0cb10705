"""AWS CloudWatch ``GetMetricData`` over the AWS JSON 1.0 protocol, signed with SigV4.

The query is Flagger's: a JSON list of MetricDataQuery objects. Credentials come from the template's
Secret only (``aws_access_key_id``, ``aws_secret_access_key``, optional ``aws_session_token``). Unlike
Flagger's AWS SDK chain, never from the controller's own environment or role: a template author must not
be able to query CloudWatch as the controller.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_mesh.duration import metric_interval_seconds
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.sigv4 import Credentials, sign
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float
from canaryctl_providers.outbound import excerpt

TARGET = "GraniteServiceVersion20100801.GetMetricData"
CONTENT_TYPE = "application/x-amz-json-1.0"
SERVICE = "monitoring"
# Flagger's window: ten metric intervals back from now, at most 20 datapoints.
LOOKBACK_INTERVALS = 10
MAX_DATAPOINTS = 20
_REGION = re.compile(r"[a-z0-9-]{1,32}")


def _credentials(spec: MetricTemplateProvider, secret: dict[str, str] | None) -> Credentials:
    if spec.secret_ref is None:
        raise ProviderConfigError(
            "cloudwatch needs spec.provider.secretRef with aws_access_key_id and aws_secret_access_key; "
            "the controller's own AWS credentials are never used"
        )
    return Credentials(
        require(secret, "aws_access_key_id", "cloudwatch"),
        require(secret, "aws_secret_access_key", "cloudwatch"),
        (secret or {}).get("aws_session_token") or None,
    )


class CloudWatchProvider:
    """The value is the first value of the first returned result (CloudWatch lists newest first)."""

    def __init__(
        self, spec: MetricTemplateProvider, secret: dict[str, str] | None, interval: str = "1m"
    ) -> None:
        if not spec.region:
            raise ProviderConfigError("cloudwatch provider needs spec.provider.region")
        if not _REGION.fullmatch(spec.region):
            raise ProviderConfigError(f"cloudwatch region {spec.region[:40]!r} is not an AWS region name")
        self.region = spec.region
        self._credentials = _credentials(spec, secret)
        self._endpoint = Endpoint.from_spec(spec, None, f"https://{SERVICE}.{spec.region}.amazonaws.com")
        self._lookback = LOOKBACK_INTERVALS * metric_interval_seconds(interval)

    async def query(self, query: str) -> float | None:
        try:
            queries = json.loads(query)
        except json.JSONDecodeError as exc:
            raise MetricQueryError(f"cloudwatch query is not a JSON list of MetricDataQuery: {exc}") from exc
        end = int(time.time())
        body = await self._call(
            {
                "MetricDataQueries": queries,
                "StartTime": end - int(self._lookback),
                "EndTime": end,
                "MaxDatapoints": MAX_DATAPOINTS,
            }
        )
        results = body.get("MetricDataResults") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise MetricQueryError(f"unexpected CloudWatch response: {excerpt(repr(body))}")
        values = (results or [{}])[0].get("Values") or []
        return to_float(values[0]) if values else None

    async def is_online(self) -> bool:
        """An empty request is answered 400 (validation) once auth passes, 403 when it does not."""
        try:
            await self._call({"MetricDataQueries": [], "StartTime": 0, "EndTime": 0})
        except MetricQueryError as exc:
            return exc.status == 400
        return True

    async def _call(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        url = self._endpoint.url_for("/")
        headers = sign(
            "POST",
            url,
            {"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
            body,
            self._credentials,
            self.region,
            SERVICE,
            datetime.now(UTC),
        )
        return parse_json(await self._endpoint.send("POST", "/", content=body, headers=headers))
