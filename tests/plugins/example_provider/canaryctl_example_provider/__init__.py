"""A router that publishes the weights in a ConfigMap (for a proxy that reads it) and a metric provider
that asks an HTTP endpoint for one number: the smallest useful plugins of each kind."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

from canaryctl.api.models import Canary, MetricTemplateProvider
from canaryctl.api.owned import metadata
from canaryctl.engine.types import RouteState
from canaryctl.ports import MetricScope, Objects


class ConfigMapRouter:
    """``spec.provider: example-configmap``: ConfigMap ``<apex>-weights`` holds both sides' weights."""

    def __init__(self, objects: Objects, provider: str) -> None:
        self.objects = objects
        self.name = provider

    def unsupported(self, routes: RouteState) -> str | None:
        if routes.match or routes.mirror_weight or routes.fault is not None:
            return f"router {self.name} only splits traffic by weight"
        return None

    async def apply(self, canary: Canary, routes: RouteState) -> None:
        data = {"primary": str(routes.primary_weight), "canary": str(routes.canary_weight)}
        meta = metadata(canary, f"{canary.spec.apex_name}-weights")
        await self.objects.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


class HttpValueProvider:
    """``type: example-http``: GET ``<address>/value?query=...`` answers ``{"value": <number or null>}``."""

    def __init__(
        self,
        spec: MetricTemplateProvider,
        secret: dict[str, str] | None,
        *,
        interval: str,
        scope: MetricScope | None,
    ) -> None:
        if not spec.address:
            raise ValueError("example-http needs spec.provider.address")
        self.address = spec.address.rstrip("/")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.address + path, timeout=5) as answer:
            return json.loads(answer.read(64 * 1024))

    async def query(self, query: str) -> float | None:
        found = await asyncio.to_thread(self._get, "/value?" + urllib.parse.urlencode({"query": query}))
        value = found.get("value")
        return None if value is None else float(value)

    async def is_online(self) -> bool:
        try:
            await asyncio.to_thread(self._get, "/healthz")
        except OSError:
            return False
        return True
