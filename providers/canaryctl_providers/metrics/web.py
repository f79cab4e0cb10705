"""A generic HTTP JSON metric source: GET or POST, one JSONPath picks the value from the answer.

The rendered query is either a bare JSONPath (``$.data.value``: GET the provider address) or a
YAML/JSON mapping ``{jsonPath, method?, path?, body?}``; ``path`` is appended to the address and a
``body`` makes it a POST of that JSON. A null at the path is no data; a missing key is an error, since
it means the template and the API disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl.api.yaml_loader import YamlError, load_one
from canaryctl_providers.metrics import jsonpath
from canaryctl_providers.metrics.errors import MetricQueryError
from canaryctl_providers.metrics.transport import Endpoint, credential_headers, parse_json, to_float


@dataclass(frozen=True)
class WebRequest:
    json_path: str
    method: str = "GET"
    path: str = ""
    body: Any = None

    @classmethod
    def parse(cls, query: str) -> WebRequest:
        try:
            spec = load_one(query)  # a template author's YAML: bounded like any manifest
        except YamlError as exc:
            raise MetricQueryError(f"web query is neither a JSONPath nor a YAML mapping: {exc}") from exc
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, dict) or not isinstance(spec.get("jsonPath"), str):
            raise MetricQueryError("web query mapping needs a string 'jsonPath'")
        unknown = set(spec) - {"jsonPath", "method", "path", "body"}
        if unknown:
            raise MetricQueryError(f"web query has unknown keys {sorted(unknown)}")
        body = spec.get("body")
        method = str(spec.get("method") or ("POST" if body is not None else "GET")).upper()
        if method not in ("GET", "POST"):
            raise MetricQueryError(f"web query method {method!r} is not GET or POST")
        return cls(spec["jsonPath"], method, str(spec.get("path") or ""), body)


class WebProvider:
    """Auth from the Secret like Prometheus: ``token`` (bearer) or ``username``/``password`` (basic)."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None) -> None:
        self._endpoint = Endpoint.from_spec(spec, credential_headers(spec, secret))

    async def query(self, query: str) -> float | None:
        request = WebRequest.parse(query)
        response = await self._endpoint.send(request.method, request.path, json_body=request.body)
        return to_float(jsonpath.select(parse_json(response), request.json_path))

    async def is_online(self) -> bool:
        """Reachable and not refusing our credentials (any status below 500 but 401/403)."""
        try:
            await self._endpoint.send("GET", "")
        except MetricQueryError as exc:
            return exc.status is not None and exc.status < 500 and exc.status not in (401, 403)
        return True
