"""`canaryctl meshd control-plane`: watched Kubernetes objects → MeshControlPlane → sidecars over ADS.

Reflectors (canaryctl_mesh.meshd.watch) keep a store of TrafficSplits, HTTPRouteGroups, TrafficPolicies,
Services and EndpointSlices and note which namespaces changed. The sync loop waits a short debounce
(so a burst, such as the first list, becomes one push), re-translates only the changed namespaces
and pushes the views that changed. Nothing is pushed before every reflector has listed once: a
restarted control plane must not hand reconnecting sidecars an empty mesh. An object that is refused
(invalid, or conflicting with an older one) gets a Warning Event and a log line, once; the rest of
the mesh keeps syncing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.control import MeshControlPlane
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Authenticator
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.metrics import WATCH_RESTART_REASONS, MeshdMetrics
from canaryctl_mesh.meshd.watch import MTLS_WATCHED, WATCHED, Object, ObjectStore, Reflector, Source
from canaryctl_mesh.translate import ALL_NAMESPACES, Refusal

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
EVENT_REASON = "MeshConfigRefused"
MAX_EVENT_MESSAGE = 1024
COMPONENT = "canaryctl-mesh"


class RefusalEvents:
    """One Warning Event per refused object and reason, on that object (``kubectl describe`` shows it).

    Event names derive from the object's uid and the message, so posting the same refusal again (after
    a restart) updates the same Event instead of piling up new ones.
    """

    def __init__(self, objects: KubeObjects | None) -> None:
        self.objects = objects
        self.reported: set[Refusal] = set()
        self._queue: asyncio.Queue[Refusal] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def report(self, refused: list[Refusal]) -> None:
        for refusal in refused:
            if refusal not in self.reported:
                log.warning("not routed: %s: %s", refusal.ref, refusal.message)
                if self.objects is not None:
                    self._queue.put_nowait(refusal)
        self.reported = set(refused)
        if self.objects is not None and self._task is None:
            self._task = asyncio.create_task(self._post_all(self.objects))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _post_all(self, objects: KubeObjects) -> None:
        while True:
            refusal = await self._queue.get()
            try:
                await objects.apply(self.event(refusal))
            except (ApiException, OSError) as error:
                log.warning("could not record an Event for %s: %s", refusal.ref, error)

    @staticmethod
    def event(refusal: Refusal, reason: str = EVENT_REASON) -> dict[str, object]:
        ref = refusal.ref
        suffix = hashlib.sha256(f"{ref.uid}/{refusal.message}".encode()).hexdigest()[:12]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if ref.uid:
            involved["uid"] = ref.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.mesh-{suffix}", "namespace": ref.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": refusal.message[:MAX_EVENT_MESSAGE],
            "type": "Warning",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


def sources(namespaces: Sequence[str] = (), mtls: bool = False) -> list[Source]:
    """One list+watch per watched kind and namespace (all namespaces when none is named); with mTLS
    the pods too, and the Namespaces (one cluster-wide list+watch)."""
    scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
    kinds = [*WATCHED, *(MTLS_WATCHED if mtls else ())]
    return [
        Source(api_version, kind, None if kind == "Namespace" else namespace)
        for api_version, kind in kinds
        for namespace in (scopes if kind != "Namespace" else [None])
    ]


class ControlPlane:
    def __init__(
        self,
        api: client.ApiClient,
        namespaces: Sequence[str] = (),
        xds_host: str = "0.0.0.0",
        xds_port: int = 15010,
        ports: config.SidecarPorts | None = None,
        bind_host: str = "0.0.0.0",
        debounce: float = 0.05,
        *,
        ads: AdsServer | None = None,
        authenticator: Authenticator | None = None,
        default_export_to: frozenset[str] = frozenset({ALL_NAMESPACES}),
        watch_timeout: float = 300.0,
        events: bool = True,
        metrics: MeshdMetrics | None = None,
        mtls: str | None = None,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        """`ads` replaces the plaintext, unauthenticated server on xds_host:xds_port (meshd passes one
        with TLS, an authenticator and a stream limit); `mtls` is the default mode (see
        `canaryctl_mesh.control`), None for none; `trust_domain` that of the identities sidecars expect
        and authorize."""
        self.ads = ads or AdsServer(xds_host, xds_port, authenticator=authenticator)
        # Held until the first sync, which waits for every watched kind to be listed once.
        self.plane = MeshControlPlane(
            self.ads,
            ports,
            bind_host,
            default_export_to,
            mtls,
            hold_until_update=True,
            trust_domain=trust_domain,
        )
        self.metrics = metrics or MeshdMetrics()
        self.metrics.watch_control_plane(self.ads, lambda: self.plane.refused)
        self.debounce = debounce
        self.version = ""
        """Digest of the translated mesh at the last push ("" before the first)."""
        self.events = RefusalEvents(KubeObjects(api, field_manager=COMPONENT) if events else None)
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store = ObjectStore(self._changed)
        self.reflectors = [
            Reflector(api, source, self.store, watch_timeout, self._restart_counter(source))
            for source in sources(namespaces, mtls is not None)
        ]
        self._task: asyncio.Task[None] | None = None

    def _restart_counter(self, source: Source) -> Callable[[str], None]:
        for reason in WATCH_RESTART_REASONS:
            self.metrics.watch_restarts.labels(source.kind, reason)  # exposed as 0 until one happens

        def restarted(reason: str) -> None:
            self.metrics.watch_restarts.labels(source.kind, reason).inc()

        return restarted

    @property
    def refused(self) -> list[Refusal]:
        return self.plane.refused

    def _changed(self) -> None:
        """Called from reflector threads; a reflector outliving `stop` finds the loop closed."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._dirty.set)

    async def start(self) -> int:
        """Serve ADS and start watching; returns the ADS port."""
        self._loop = asyncio.get_running_loop()
        port = await self.ads.start()
        for reflector in self.reflectors:
            reflector.start()
        self._task = asyncio.create_task(self._sync_loop())
        log.info("serving ADS on %s:%d, watching %d sources", self.ads.host, port, len(self.reflectors))
        return port

    async def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.events.stop()
        for reflector in self.reflectors:
            await asyncio.to_thread(reflector.join, STOP_TIMEOUT)
        await self.ads.stop()
        self._loop = None

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _sync_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)
            if not all(r.synced.is_set() for r in self.reflectors):
                # A reflector notes its first list in the store before it counts as synced: look again
                # (clearing the flag here would wait for a change that may never come).
                continue
            self._dirty.clear()
            await self.sync()

    def _translate(self, namespaces: dict[str, list[Object]]) -> None:
        """All at once; after an error meshd did not foresee, one by one, so that only the namespace
        that caused it keeps its last configuration and the mesh goes on for every other one."""
        try:
            self.plane.update(namespaces)
            return
        except Exception:  # a fault of meshd: invalid objects are refused one by one, not raised
            if len(namespaces) > 1:
                log.warning("translating %d namespaces failed; translating them one by one", len(namespaces))
            else:
                self._translation_failed(next(iter(namespaces), "?"))
                return
        for namespace, objects in namespaces.items():
            try:
                self.plane.update({namespace: objects})
            except Exception:
                self._translation_failed(namespace)

    def _translation_failed(self, namespace: str) -> None:
        log.exception(
            "namespace %s: could not translate its objects; its sidecars keep the last configuration",
            namespace,
        )
        self.metrics.translation_failures.inc()

    async def sync(self) -> None:
        """Re-translate the namespaces that changed and push the views that changed."""
        with self.metrics.sync_seconds.time():
            dirty = self.store.take_dirty()
            self._translate({namespace: self.store.namespace_objects(namespace) for namespace in dirty})
            version = await self.plane.push()
        self.events.report(self.plane.refused)
        if version != self.version:
            log.info("pushed snapshot %s (%d namespaces changed)", version, len(dirty))
        self.version = version
