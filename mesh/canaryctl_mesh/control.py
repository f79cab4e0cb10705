"""The mesh control plane's sync step: watched Kubernetes objects → sidecar config on the ADS server.

Whoever watches the cluster (the operator) calls `sync` with the current objects after any change.
A TrafficSplit that cannot be translated is left out and reported in `errors`; the rest still syncs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from canaryctl_mesh import config, protocols
from canaryctl_mesh.ads import ANY_NODE, AdsServer
from canaryctl_mesh.translate import translate


class MeshControlPlane:
    def __init__(
        self, ads: AdsServer, ports: config.SidecarPorts | None = None, bind_host: str = "0.0.0.0"
    ) -> None:
        self.ads = ads
        self.ports = ports or config.SidecarPorts()
        self.bind_host = bind_host
        self.errors: list[str] = []

    def resources(self, objects: Iterable[Mapping[str, Any]]) -> config.Resources:
        errors: list[str] = []
        items = list(objects)
        specs = translate(items, errors)
        self.errors = errors
        opaque = protocols.opaque_ports(items)
        return config.sidecar_resources(specs, self.ports, bind_host=self.bind_host, opaque_ports=opaque)

    async def sync(self, objects: Iterable[Mapping[str, Any]]) -> str:
        """Push the config for `objects` to every sidecar; returns the snapshot version."""
        return await self.ads.set_snapshot(ANY_NODE, self.resources(objects))
