"""`canaryctl meshd control-plane`: watched Kubernetes objects → MeshControlPlane.sync → sidecars over ADS.

Reflectors (canaryctl_mesh.meshd.watch) keep a store of TrafficSplits, HTTPRouteGroups, TrafficPolicies,
Services and EndpointSlices. Any change marks the store dirty; the sync loop waits a short debounce
(so a burst, such as the first list, becomes one push) and syncs the whole store. Nothing is pushed
before every reflector has listed once: a restarted control plane must not hand reconnecting sidecars
an empty mesh. Translation errors are logged once each and leave the rest of the mesh syncing; a
snapshot Envoy would refuse (ValueError) is logged and the sidecars keep the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from kubernetes import client

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.control import MeshControlPlane
from canaryctl_mesh.meshd.watch import WATCHED, ObjectStore, Reflector, Source

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


def sources(namespaces: Sequence[str] = ()) -> list[Source]:
    """One list+watch per watched kind and namespace (all namespaces when none is named)."""
    scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
    return [Source(api_version, kind, namespace) for api_version, kind in WATCHED for namespace in scopes]


class ControlPlane:
    def __init__(
        self,
        api: client.ApiClient,
        namespaces: Sequence[str] = (),
        xds_host: str = "0.0.0.0",
        xds_port: int = 15010,
        resync: float = 30.0,
        ports: config.SidecarPorts | None = None,
        bind_host: str = "0.0.0.0",
        debounce: float = 0.05,
    ) -> None:
        self.ads = AdsServer(xds_host, xds_port)
        self.plane = MeshControlPlane(self.ads, ports, bind_host)
        self.debounce = debounce
        self.version = ""
        """Snapshot version of the last push ("" before the first)."""
        self.errors: list[str] = []
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store = ObjectStore(self._changed)
        self.reflectors = [Reflector(api, source, self.store, resync) for source in sources(namespaces)]
        self._task: asyncio.Task[None] | None = None

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
            self._dirty.clear()
            if all(r.synced.is_set() for r in self.reflectors):
                await self.sync()

    async def sync(self) -> None:
        """Push the store's current objects to every sidecar."""
        try:
            version = await self.plane.sync(self.store.objects())
        except ValueError as error:
            log.error("mesh config refused, sidecars keep the previous one: %s", error)
            return
        for problem in self.plane.errors:
            if problem not in self.errors:
                log.warning("not routed: %s", problem)
        self.errors = list(self.plane.errors)
        if version != self.version:
            log.info("pushed snapshot %s", version)
        self.version = version
