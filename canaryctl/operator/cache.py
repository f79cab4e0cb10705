"""Watch-backed reads: a tick reads workloads, Services, ConfigMaps, autoscalers and routing objects
from memory, and only its writes go to the API server.

Each kind is listed and then watched (a reflector per kind and watched namespace, all namespaces when
none is named) from the first time a tick reads it; until that first list has arrived a read is a GET,
and so is every read of a kind that is not cached: Secrets are never held in memory, and a kind the
operator may not list or watch stays on GETs. The answer of each write is stored at once, so the next
read sees the operator's own write before its watch event arrives, and an older watch event never
replaces a newer object (see ``ObjectStore.upsert``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from kubernetes import client

from canaryctl_mesh.api import MESH_GROUP, TRAFFIC_POLICY_KIND
from canaryctl_mesh.meshd.watch import ObjectStore, Reflector, Source

Obj = dict[str, Any]

# (API group, kind): a kind name alone is ambiguous (App Mesh has a VirtualService too).
CACHED_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "DaemonSet"),
        ("", "Service"),
        ("", "ConfigMap"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("keda.sh", "ScaledObject"),
        ("split.smi-spec.io", "TrafficSplit"),
        ("specs.smi-spec.io", "HTTPRouteGroup"),
        (MESH_GROUP, TRAFFIC_POLICY_KIND),
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "DestinationRule"),
        ("gateway.networking.k8s.io", "HTTPRoute"),
    }
)


def shared_strings(value: Any) -> Any:
    """``value`` with its mapping keys interned. Each object decoded from JSON holds its own copy of
    every key ("metadata", "labels", "containerPort", ...), and the cache keeps eight objects per Canary.
    (Values stay as they are: most short ones, resourceVersions, uids and times, are unique, and each
    interned one would take a slot in the interpreter's table of interned strings.)"""
    if isinstance(value, dict):
        return {sys.intern(key): shared_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shared_strings(item) for item in value]
    return value


class LeanStore(ObjectStore):
    """The store without ``metadata.managedFields`` (the API server keeps a record per field manager
    on every object, often more than its spec, and nothing the operator reads looks at it), and with
    the keys of its objects shared (``shared_strings``)."""

    @staticmethod
    def _typed(source: Source, obj: Obj) -> Obj:
        metadata = obj.get("metadata") or {}
        if "managedFields" in metadata:
            obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
        typed = ObjectStore._typed(source, obj)
        try:
            shared: Obj = shared_strings(typed)
        except RecursionError:  # nested deeper than the interpreter recurses (schema-free fields): as is
            return typed
        return shared


# Each watch request lasts this long; the next resumes from the last resourceVersion seen.
WATCH_SECONDS = 300.0
STOP_SECONDS = 5.0


class WatchCache:
    """The objects of ``CACHED_KINDS`` in the operator's namespaces, kept current by watches."""

    def __init__(
        self, api: client.ApiClient, namespaces: Sequence[str] = (), watch_timeout: float = WATCH_SECONDS
    ) -> None:
        self.api = api
        self.namespaces = frozenset(namespaces)
        self.watch_timeout = watch_timeout
        self.store = LeanStore(lambda: None)
        self.reflectors: dict[Source, Reflector] = {}

    def _source(self, api_version: str, kind: str, namespace: str) -> Source | None:
        if (api_version.rpartition("/")[0], kind) not in CACHED_KINDS:
            return None
        if not self.namespaces:
            return Source(api_version, kind, None)
        return Source(api_version, kind, namespace) if namespace in self.namespaces else None

    def lookup(self, api_version: str, kind: str, namespace: str, name: str) -> tuple[bool, Obj | None]:
        """``(True, object or None)`` from a synced cache; ``(False, None)``: ask the API server. The
        first lookup of a kind starts its watch."""
        source = self._source(api_version, kind, namespace)
        if source is None:
            return False, None
        reflector = self.reflectors.get(source)
        if reflector is None:
            self.reflectors[source] = Reflector(self.api, source, self.store, self.watch_timeout)
            self.reflectors[source].start()
            return False, None
        if not reflector.synced.is_set():
            return False, None
        return True, self.store.get(source, namespace, name)

    def offer(self, obj: Obj) -> None:
        """Store what a write answered (the object as the server now has it)."""
        meta = obj.get("metadata") or {}
        source = self._source(str(obj.get("apiVersion")), str(obj.get("kind")), meta.get("namespace") or "")
        if source is not None and source in self.reflectors:
            self.store.upsert(source, obj)

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Drop a deleted object (its watch event would, later)."""
        source = self._source(api_version, kind, namespace)
        if source is not None and source in self.reflectors:
            self.store.remove(source, {"metadata": {"namespace": namespace, "name": name}})

    def stop(self) -> None:
        """Stop every watch; wait at most ``STOP_SECONDS`` in all for lists still being read (the
        threads are daemons: one still reading does not keep the process alive)."""
        for reflector in self.reflectors.values():
            reflector.stop()
        deadline = time.monotonic() + STOP_SECONDS
        for reflector in self.reflectors.values():
            reflector.join(max(0.0, deadline - time.monotonic()))
