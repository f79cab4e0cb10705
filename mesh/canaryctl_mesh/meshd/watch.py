"""List + watch of the objects the mesh control plane translates, over the kubernetes client.

Why watch and not poll: a canary step changes a TrafficSplit's weights and expects the sidecars to
follow within a second; polling the 18 watched resources per namespace that often would load the API
server for nothing, and polling less often would slow every step. So each (resource, namespace) gets a
reflector, client-go's pattern: list once (which returns a resourceVersion), then watch from there,
for ever: each watch request lasts `watch_timeout` seconds and the next one resumes from the last
resourceVersion seen (bookmarks keep it fresh), so nothing is listed again while the watch works. A
410 Gone (history compacted) or a failed watch lists again. Failures back off exponentially
(jittered, 0.2 s doubling up to 30 s); the backoff resets once a list and a watch both worked.

The store remembers which namespaces changed, so the control plane re-translates only those.

Reflectors are threads because the kubernetes client blocks; `stop()` shuts the open stream's socket
down so a thread blocked in a read returns at once.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh import config
from canaryctl_mesh.api import MESH_GROUP, TRAFFIC_POLICY_KIND
from canaryctl_mesh.kube import KINDS, resource_path

log = logging.getLogger(__name__)

Object = dict[str, Any]

# (API group, kind): a kind name alone is ambiguous (Knative serves a Service too).
WATCHED_KINDS = frozenset(
    {
        ("split.smi-spec.io", "TrafficSplit"),
        ("specs.smi-spec.io", "HTTPRouteGroup"),
        (MESH_GROUP, TRAFFIC_POLICY_KIND),
        ("", "Service"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("access.smi-spec.io", "TrafficTarget"),
        ("specs.smi-spec.io", "TCPRoute"),
    }
)
WATCHED: tuple[tuple[str, str], ...] = tuple(
    sorted((key for key in KINDS if (key[0].rpartition("/")[0], key[1]) in WATCHED_KINDS), reverse=True)
)
"""(apiVersion, kind) pairs the control plane watches, newest API version of a group first."""
MTLS_WATCHED: tuple[tuple[str, str], ...] = (("v1", "Pod"), ("v1", "Namespace"))
"""Watched as well with mTLS: which endpoints run a sidecar (and as whom), and each namespace's mode."""

CONNECT_TIMEOUT = 5.0
LIST_TIMEOUT = 30.0
PAGE_SIZE = 500
MAX_PAGES = 1000
READ_GRACE = 10.0
"""A watch read waits this long past the server-side timeout before the reflector gives up on it."""
MISSING_RECHECK = 60.0
"""A resource the API server does not serve (a CRD not installed) is looked for again this often."""


@dataclass(frozen=True)
class Source:
    """One list+watch: a resource in one namespace, or in all of them (namespace None)."""

    api_version: str
    kind: str
    namespace: str | None

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_version} in {self.namespace or 'all namespaces'}"


class Backoff:
    """Exponential delays with ±20 % jitter, capped at `maximum`."""

    def __init__(self, initial: float = 0.2, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.initial


def _name(source: Source, obj: Object) -> tuple[str, str]:
    """(namespace, name); a Namespace object is kept with the namespace it is."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    return (name if source.kind == "Namespace" else str(metadata.get("namespace") or "")), name


POD_ANNOTATIONS = (config.STATUS_ANNOTATION, config.UNCAPTURED_INBOUND_ANNOTATION)


def _kept(source: Source, obj: Object) -> Object:
    """What the store keeps of an object: a Pod only as far as mTLS reads it (its name, the injector's
    annotations, its ServiceAccount, its IP and phase). A pod object runs to tens of KB, clusters hold
    thousands, and its status changes every few seconds without changing anything the mesh routes by
    (the IP is set once; of the phase only its end, when the IP may go to another pod)."""
    if source.kind != "Pod":
        return obj
    metadata = obj.get("metadata") or {}
    kept = {key: metadata[key] for key in ("name", "namespace", "resourceVersion") if key in metadata}
    annotations = metadata.get("annotations") or {}
    if any(key in annotations for key in POD_ANNOTATIONS):
        kept["annotations"] = {key: annotations[key] for key in POD_ANNOTATIONS if key in annotations}
    status = obj.get("status") or {}
    return {
        "metadata": kept,
        "spec": {"serviceAccountName": (obj.get("spec") or {}).get("serviceAccountName")},
        "status": {
            key: status[key]
            for key in ("podIP", "phase")
            if key in status and (key != "phase" or status[key] in config.TERMINATED_PHASES)
        },
    }


def _unversioned(obj: Object | None) -> Object | None:
    if obj is None:
        return None
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": metadata}


def older(obj: Object, than: Object | None) -> bool:
    """Whether ``obj`` is an older version than ``than``. resourceVersions are opaque, but every API
    server in use hands out increasing integers; anything else is never called older."""
    if than is None:
        return False
    mine = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    theirs = str((than.get("metadata") or {}).get("resourceVersion") or "")
    return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)


class ObjectStore:
    """The watched objects by source and namespace; thread-safe. `on_change` runs in the changing
    thread after changes; `take_dirty` tells which namespaces changed since it was last called."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self._lock = threading.Lock()
        self._by_source: dict[Source, dict[str, dict[str, Object]]] = {}
        self._dirty: set[str] = set()

    @staticmethod
    def _typed(source: Source, obj: Object) -> Object:
        """List items of built-in kinds come without apiVersion/kind; translation needs both."""
        return {**_kept(source, obj), "apiVersion": source.api_version, "kind": source.kind}

    def replace(self, source: Source, items: list[Object]) -> None:
        fresh: dict[str, dict[str, Object]] = {}
        for obj in items:
            namespace, name = _name(source, obj)
            fresh.setdefault(namespace, {})[name] = self._typed(source, obj)
        with self._lock:
            old = self._by_source.get(source, {})
            self._dirty |= {ns for ns in old.keys() | fresh.keys() if old.get(ns) != fresh.get(ns)}
            self._by_source[source] = fresh
        self.on_change()

    def upsert(self, source: Source, obj: Object) -> None:
        """Store ``obj`` unless a newer version is stored (a write's answer can arrive before the watch
        event of an earlier write)."""
        namespace, name = _name(source, obj)
        with self._lock:
            objects = self._by_source.setdefault(source, {}).setdefault(namespace, {})
            previous = objects.get(name)
            if older(obj, previous):
                return
            objects[name] = self._typed(source, obj)
            if _unversioned(previous) == _unversioned(objects[name]):
                return  # nothing the store keeps changed (a pod's status, say)
            self._dirty.add(namespace)
        self.on_change()

    def remove(self, source: Source, obj: Object) -> None:
        namespace, name = _name(source, obj)
        with self._lock:
            self._by_source.get(source, {}).get(namespace, {}).pop(name, None)
            self._dirty.add(namespace)
        self.on_change()

    def get(self, source: Source, namespace: str, name: str) -> Object | None:
        with self._lock:
            return self._by_source.get(source, {}).get(namespace, {}).get(name)

    def take_dirty(self) -> set[str]:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def namespace_objects(self, namespace: str) -> list[Object]:
        """Every object of `namespace` once: a CRD serving several versions shows each object under all
        of them, so the same (group, kind, name) counts once, from the newest version watched."""
        order = {key: index for index, key in enumerate((*WATCHED, *MTLS_WATCHED))}
        with self._lock:
            sources = sorted(
                self._by_source.items(), key=lambda s: order.get((s[0].api_version, s[0].kind), 0)
            )
            seen: dict[tuple[str, str, str], Object] = {}
            for source, by_namespace in sources:
                group = source.api_version.rsplit("/", 1)[0] if "/" in source.api_version else ""
                for name, obj in by_namespace.get(namespace, {}).items():
                    seen.setdefault((group, source.kind, name), obj)
        return list(seen.values())

    def namespaces(self) -> set[str]:
        with self._lock:
            return {
                ns for by_namespace in self._by_source.values() for ns, objs in by_namespace.items() if objs
            }


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Reflector:
    """Keeps `store` in step with one `source`; `synced` is set after the first list (or a 404)."""

    def __init__(
        self,
        api: client.ApiClient,
        source: Source,
        store: ObjectStore,
        watch_timeout: float = 300.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        """`on_restart` is told each time the list+watch starts over: "expired" or "error"."""
        self.api = api
        self.on_restart = on_restart
        self.source = source
        self.store = store
        self.watch_timeout = watch_timeout
        self.backoff = Backoff()
        self.synced = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch {source}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._response is not None:
                self._response.shutdown()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _get(self, query: list[tuple[str, str]], read_timeout: float) -> urllib3.BaseHTTPResponse:
        path = resource_path(self.source.api_version, self.source.kind, self.source.namespace)
        request = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=(CONNECT_TIMEOUT, read_timeout))
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]
            raise ApiException(http_resp=response)
        raw: urllib3.BaseHTTPResponse = response.response
        return raw

    def _list(self) -> str:
        """All pages into the store; returns the list's resourceVersion."""
        items: list[Object] = []
        token = ""
        for _ in range(MAX_PAGES):
            query = [("limit", str(PAGE_SIZE))] + ([("continue", token)] if token else [])
            page = json.loads(self._get(query, LIST_TIMEOUT).data)
            items += page.get("items") or []
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                self.store.replace(self.source, items)
                return str(metadata.get("resourceVersion") or "")
        raise ValueError(f"{self.source}: more than {MAX_PAGES} pages of {PAGE_SIZE}")

    def _events(self, version: str, seconds: float) -> Iterator[Object]:
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(int(seconds)))]
        query += [("resourceVersion", version)] if version else []
        response = self._get(query, seconds + READ_GRACE)
        with self._lock:
            if self._stopping.is_set():
                response.close()
                return
            self._response = response
        try:
            for line in response:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except RecursionError:
                    # Nested deeper than the decoder recurses (a field without a schema): listing again
                    # would meet it again, so only this event is dropped, and the watch goes on.
                    log.warning("%s: an event nested too deep to decode was skipped", self.source)
                    continue
                yield event
        except urllib3.exceptions.ReadTimeoutError:
            return  # a quiet stream past its timeout: watch again from the last version
        finally:
            with self._lock:
                self._response = None
            response.close()

    def _watch(self, version: str) -> str:
        """Apply events until the watch request ends; returns the last version seen."""
        for event in self._events(version, self.watch_timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired(obj.get("message", ""))
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            if kind in ("ADDED", "MODIFIED"):
                self.store.upsert(self.source, obj)
            elif kind == "DELETED":
                self.store.remove(self.source, obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if self._stopping.is_set():
                break
        return version

    # -- the loop -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        reported_missing = False
        while not self._stopping.is_set():
            try:
                version = self._list()
                self.synced.set()
                while not self._stopping.is_set():
                    version = self._watch(version)
                    self.backoff.reset()  # a list and a watch both worked
            except _Expired as expired:
                self._restarted("expired")
                log.info("%s: watch expired (%s), listing again", self.source, expired)
            except ApiException as error:
                if error.status == 410:
                    self._restarted("expired")
                    log.info("%s: resourceVersion expired, listing again", self.source)
                elif error.status == 404:
                    # The CRD (this version of it) is not installed; it may be later.
                    if not reported_missing:
                        log.info("%s is not served; checking again every %ss", self.source, MISSING_RECHECK)
                    reported_missing = True
                    self.store.replace(self.source, [])
                    self.synced.set()
                    self._stopping.wait(MISSING_RECHECK)
                else:
                    self._failed(error)
            except (urllib3.exceptions.HTTPError, OSError, ValueError, RecursionError) as error:
                self._failed(error)  # a list holding a too-deep object: retried with backoff, never fatal

    def _restarted(self, reason: str) -> None:
        if self.on_restart is not None:
            self.on_restart(reason)

    def _failed(self, error: Exception) -> None:
        if self._stopping.is_set():
            return
        self._restarted("error")
        delay = self.backoff.next()
        log.warning("%s: %s; retrying in %.1fs", self.source, error, delay)
        self._stopping.wait(delay)
