"""Keptn metrics (``metrics.keptn.sh/v1beta1``): the value of a KeptnMetric, or the verdict of a Keptn
Analysis created for the query (1 passed, 0 failed), read through the Kubernetes API.

The query is Flagger's: ``<keptnmetric|analysis>/<namespace>/<name>[/<timeframe>[/<k=v;k=v>]]``, read
lower-cased as Flagger reads it. Keptn has no address or credentials of its own: the controller's own
API access is used, so a template may name its own namespace only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from canaryctl.ports import KubeApi, MetricScope
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import to_float

API_PATH = "/apis/metrics.keptn.sh/v1beta1"
KINDS = {
    "keptnmetric": "keptnmetrics",
    "keptnmetrics": "keptnmetrics",
    "analysis": "analyses",
    "analyses": "analyses",
}
DEFAULT_TIMEFRAME = "1m"
# Flagger's: how long Keptn gets to finish an Analysis, and how often it is looked at meanwhile.
ANALYSIS_TIMEOUT_SECONDS = 10.0
ANALYSIS_POLL_SECONDS = 1.0
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?")
log = logging.getLogger(__name__)
QUERY_FORMAT = "<keptnmetric|analysis>/<namespace>/<name>/<timeframe>/<key=value;key=value>"


@dataclass(frozen=True)
class KeptnQuery:
    resource: str  # keptnmetrics or analyses
    namespace: str
    name: str
    timeframe: str = DEFAULT_TIMEFRAME
    args: dict[str, str] = field(default_factory=dict)


def parse_query(query: str) -> KeptnQuery:
    parts = query.strip().lower().split("/")
    if len(parts) < 3 or not all(parts[:3]):
        raise MetricQueryError(f"keptn query {query[:100]!r} is not {QUERY_FORMAT}")
    resource = KINDS.get(parts[0])
    if resource is None:
        raise MetricQueryError(f"keptn query kind {parts[0][:40]!r} is neither keptnmetric nor analysis")
    if not all(_NAME.fullmatch(part) for part in parts[1:3]):
        raise MetricQueryError(f"keptn query {query[:100]!r} names no valid namespace and object name")
    pairs = (pair.split("=") for pair in parts[4].split(";")) if len(parts) > 4 else iter(())
    args = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    timeframe = parts[3] if len(parts) > 3 and parts[3] else DEFAULT_TIMEFRAME
    return KeptnQuery(resource, parts[1], parts[2], timeframe, args)


def analysis_object(query: KeptnQuery) -> dict[str, Any]:
    """The Analysis Flagger creates: the definition of the same name, over the recent timeframe."""
    return {
        "apiVersion": "metrics.keptn.sh/v1beta1",
        "kind": "Analysis",
        "metadata": {"name": f"{query.name}-{uuid.uuid4().hex[:6]}", "namespace": query.namespace},
        "spec": {
            "analysisDefinition": {"name": query.name},
            "timeframe": {"recent": query.timeframe},
            "args": query.args,
        },
    }


class KeptnProvider:
    def __init__(self, scope: MetricScope) -> None:
        if scope.cluster is None:
            raise ProviderConfigError("keptn reads the cluster's API, and there is no cluster here")
        self._cluster: KubeApi = scope.cluster
        self._namespace = scope.namespace

    def _path(self, query: KeptnQuery, name: str | None = None) -> str:
        path = f"{API_PATH}/namespaces/{query.namespace}/{query.resource}"
        return f"{path}/{name}" if name else path

    async def query(self, query: str) -> float | None:
        parsed = parse_query(query)
        if parsed.namespace != self._namespace:
            raise MetricQueryError(
                f"keptn query reads namespace {parsed.namespace!r}, but a MetricTemplate in namespace "
                f"{self._namespace!r} may only read its own namespace (Keptn is read with the "
                "controller's access)"
            )
        if parsed.resource == "keptnmetrics":
            return await self._metric(parsed)
        return await self._analysis(parsed)

    async def _metric(self, query: KeptnQuery) -> float | None:
        """``status.value`` (a string); none yet is no data, Keptn's ``errMsg`` without one an error."""
        found = await self._cluster.request("GET", self._path(query, query.name))
        status = found.get("status") if isinstance(found, dict) else None
        value = status.get("value") if isinstance(status, dict) else None
        if value is None or value == "":
            if isinstance(status, dict) and status.get("errMsg"):
                raise MetricQueryError(f"KeptnMetric {query.name}: {str(status['errMsg'])[:300]}")
            return None
        return to_float(value)

    async def _analysis(self, query: KeptnQuery) -> float:
        """Create an Analysis, wait for Keptn to complete it, delete it whatever happened."""
        analysis = analysis_object(query)
        name = analysis["metadata"]["name"]
        await self._cluster.request("POST", self._path(query), body=analysis)
        try:
            async with asyncio.timeout(ANALYSIS_TIMEOUT_SECONDS):
                while True:
                    await asyncio.sleep(ANALYSIS_POLL_SECONDS)
                    status = (await self._cluster.request("GET", self._path(query, name))).get("status") or {}
                    if status.get("state") == "Completed" and isinstance(status.get("pass"), bool):
                        return 1.0 if status["pass"] else 0.0
        except TimeoutError:
            waited = f"{ANALYSIS_TIMEOUT_SECONDS:g}s"
            raise MetricQueryError(
                f"Keptn did not complete Analysis {query.namespace}/{name} within {waited}"
            ) from None
        finally:
            await self._delete(query, name)

    async def _delete(self, query: KeptnQuery, name: str) -> None:
        try:
            await self._cluster.request("DELETE", self._path(query, name))
        except MetricQueryError as exc:  # the Analysis stays until someone removes it
            log.warning("could not delete Keptn Analysis %s/%s: %s", query.namespace, name, exc)

    async def is_online(self) -> bool:
        """Keptn's metrics API is served (its discovery document answers)."""
        try:
            await self._cluster.request("GET", API_PATH)
        except MetricQueryError:
            return False
        return True
