"""The operator's remaining ports over the Kubernetes API: Events, status writes, and lookups of the
MetricTemplates, AlertProviders and Secrets canaries refer to, with the rule on which of them a Canary
may refer to.

MetricTemplates and AlertProviders are watched (kopf event handlers fill ``Catalog``), so a tick reads
them from memory; a miss (e.g. right after start) falls back to one GET. Reads of the kinds in
``cache.CACHED_KINDS`` come from a ``WatchCache`` the same way.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final

from canaryctl import registry
from canaryctl.api.models import (
    API_VERSION,
    AlertProvider,
    Canary,
    CanaryAnalysis,
    CrossNamespaceObjectReference,
    MetricTemplate,
)
from canaryctl.engine.clock import to_rfc3339
from canaryctl.operator.cache import WatchCache
from canaryctl.ports import Notifier
from canaryctl_mesh.kube import KubeObjects, resource_path

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class OperatorObjects(KubeObjects):
    """KubeObjects reading through a ``WatchCache`` (when given one), plus the write only the operator
    makes: a status patch."""

    def __init__(self, *args: Any, cache: WatchCache | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None:
            cached, found = self.cache.lookup(api_version, kind, namespace, name)
            if cached:
                return found
        return await super().get(api_version, kind, namespace, name)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        stored = await super().apply(obj)
        if self.cache is not None:
            self.cache.offer(stored)
        return stored

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await super().delete(api_version, kind, namespace, name)
        if self.cache is not None:
            self.cache.forget(api_version, kind, namespace, name)

    async def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """A merge patch of ``.status``; with ``resource_version`` only if the object is still at that
        version (else the API server answers 409 Conflict). Returns the object as stored."""
        path = resource_path(API_VERSION, kind, namespace, name) + "/status"
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request("PATCH", path, body, "application/merge-patch+json")

    async def patch_metadata(
        self, api_version: str, kind: str, namespace: str, name: str, metadata: dict[str, Any]
    ) -> None:
        """A merge patch of ``metadata``; with its ``resourceVersion`` the server refuses a stale one."""
        path = resource_path(api_version, kind, namespace, name)
        body = {"metadata": metadata}
        await self.request("PATCH", path, body, "application/merge-patch+json")


def _references(
    base: str, analysis: CanaryAnalysis
) -> list[tuple[str, str, CrossNamespaceObjectReference | None]]:
    """(field path, kind, reference) of every templateRef and providerRef in one analysis."""
    metric_lists = [(base, analysis.metrics)] + [
        (f"{base}.steps[{i}].analysis", step.analysis.metrics)
        for i, step in enumerate(analysis.steps or [])
        if step.analysis is not None
    ]
    found: list[tuple[str, str, CrossNamespaceObjectReference | None]] = [
        (f"{owner}.metrics[{i}].templateRef", "MetricTemplate", metric.template_ref)
        for owner, metrics in metric_lists
        for i, metric in enumerate(metrics or [])
    ]
    found += [
        (f"{base}.alerts[{i}].providerRef", "AlertProvider", alert.provider_ref)
        for i, alert in enumerate(analysis.alerts or [])
    ]
    return found


ANY_NAMESPACE: Final = "*"
"""As a shared namespace: every namespace, Flagger's default (for clusters of one team)."""


def cross_namespace_reference(canary: Canary, shared: Collection[str]) -> str | None:
    """The first templateRef, providerRef or upstreamRef naming a namespace that is neither the Canary's
    (an empty namespace is the Canary's) nor one of the ``shared`` ones, or None.

    A MetricTemplate or AlertProvider is used with the Secrets of its own namespace, so a tenant may
    refer only to namespaces no tenant writes to: the controller's, and those the installer shares."""
    if ANY_NAMESPACE in shared:
        return None
    namespace = canary.metadata.namespace or "default"
    spec = canary.spec
    found: list[tuple[str, str, CrossNamespaceObjectReference | None]] = [
        ("spec.upstreamRef", "upstream", spec.upstream_ref)
    ]
    for base, analysis in (("spec.analysis", spec.analysis), ("spec.canaryAnalysis", spec.canary_analysis)):
        if analysis is not None:
            found += _references(base, analysis)
    for path, kind, ref in found:
        if ref is not None and (ref.namespace or namespace) not in {namespace, *shared}:
            allowed = (
                f"only the shared namespaces ({', '.join(sorted(shared))}) may be referred to"
                " (--shared-namespace, chart controller.sharedNamespaces)"
                if shared
                else "cross-namespace references are blocked (--no-cross-namespace-refs)"
            )
            return f"{path}: {kind} {ref.namespace}/{ref.name} is in another namespace; {allowed}"
    return None


def _decode(secret: dict[str, Any]) -> dict[str, str]:
    data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    return data | dict(secret.get("stringData") or {})


def _manifest(body: dict[str, Any]) -> dict[str, Any]:
    """What the API models validate: the object without status and server-set extras."""
    return {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}


class KubeEvents:
    """The Events port: one v1 Event per engine event, involving the Canary (``kubectl describe``).

    Best effort: an Event that cannot be written (no RBAC for events, a full etcd, a quota) is logged and
    dropped, never raised, because it comes after routes and workloads already changed."""

    def __init__(self, objects: OperatorObjects, component: str = "canaryctl") -> None:
        self.objects = objects
        self.component = component

    async def record(self, canary: Canary, reason: str, message: str, warning: bool) -> None:
        name, namespace = canary.metadata.name or "", canary.metadata.namespace or "default"
        now = to_rfc3339(datetime.now(UTC))
        involved = {"apiVersion": API_VERSION, "kind": "Canary", "name": name, "namespace": namespace}
        uid = (canary.metadata.model_extra or {}).get("uid")
        if uid:
            involved["uid"] = uid
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.objects.create(event)
        except Exception as exc:  # the API's or the transport's; an event is never worth a failed tick
            log.warning("event %s for canary %s/%s not recorded: %s", reason, namespace, name, exc)


class Catalog:
    """MetricTemplates and AlertProviders by (namespace, name), kept current by watch events."""

    def __init__(self, objects: KubeObjects) -> None:
        self.objects = objects
        self.templates: dict[Key, dict[str, Any]] = {}
        self.providers: dict[Key, dict[str, Any]] = {}

    def _store(self, kind: str) -> dict[Key, dict[str, Any]]:
        return self.templates if kind == "MetricTemplate" else self.providers

    def observe(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        store = self._store(kind)
        key = (body["metadata"].get("namespace") or "", body["metadata"]["name"])
        if event_type == "DELETED":
            store.pop(key, None)
        else:
            store[key] = _manifest(body)

    async def _get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        found = self._store(kind).get((namespace, name))
        if found is None:
            fetched = await self.objects.get(API_VERSION, kind, namespace, name)
            if fetched is None:
                raise LookupError(f"{kind} {namespace}/{name} not found")
            found = _manifest(fetched)
        return found

    async def template(self, name: str, namespace: str) -> MetricTemplate:
        return MetricTemplate.model_validate(await self._get("MetricTemplate", name, namespace))

    async def secret(self, name: str, namespace: str) -> dict[str, str]:
        found = await self.objects.get("v1", "Secret", namespace, name)
        if found is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        return _decode(found)

    async def notifier(self, name: str, namespace: str) -> Notifier:
        provider = AlertProvider.model_validate(await self._get("AlertProvider", name, namespace))
        secret_ref = provider.spec.secret_ref
        secret = await self.secret(secret_ref.name, namespace) if secret_ref is not None else None
        return registry.notifier(provider.spec, secret)
