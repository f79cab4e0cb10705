"""Local mode: one Envoy process fronting local endpoints, configured by file-based xDS.

Each update is written to a temp file and renamed into the watched directory (Envoy ignores in-place
writes), clusters first, then routes, and `apply` returns only once Envoy reports the new version, or
raises when Envoy rejects it (Envoy then keeps serving the last good config).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from typing import Any

from canaryctl_mesh import config
from canaryctl_mesh.process import EnvoyError, EnvoyProcess, make_workdir


class MeshConfigRejected(EnvoyError):
    pass


_STAT_KEYS = {"cds.json": "cluster_manager.cds", "rds.json": f"http.{config.LOCAL}.rds.{config.LOCAL}"}


class LocalMesh:
    def __init__(self, listen_host: str = "127.0.0.1", listen_port: int = 0, concurrency: int = 1) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.workdir = make_workdir("canaryctl-mesh-")
        self.xds_dir = self.workdir / "xds"
        self.xds_dir.mkdir()
        self.envoy = EnvoyProcess(
            config.local_bootstrap("canaryctl-local", str(self.xds_dir)), self.workdir, concurrency
        )
        self.access_log_path = self.workdir / "access.log"
        self._route_source = config.file_source(str(self.xds_dir), "rds.json")
        self._version = 0
        self._good: dict[str, tuple[list[dict[str, Any]], str]] = {}
        self._lock = asyncio.Lock()
        self._clusters: list[dict[str, Any]] = []

    @property
    def stats_url(self) -> str:
        return f"{self.envoy.admin_url}/stats/prometheus"

    @property
    def listen_url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"

    async def start(self) -> None:
        # Envoy needs the files before it starts: no clusters yet and an empty route table (404).
        listener = config.local_listener(
            self.listen_host, self.listen_port, self._route_source, str(self.access_log_path)
        )
        self._good = {
            "cds.json": ([], "0"),
            "lds.json": ([listener], "0"),
            "rds.json": ([config.build_route_config(config.LOCAL, [])], "0"),
        }
        for filename, (resources, version) in self._good.items():
            self._write(filename, resources, version)
        try:
            await self.envoy.start()
            self.listen_port = await self.envoy.listener_port(config.LOCAL)
        except BaseException:
            await self.stop()
            raise

    def _write(self, filename: str, resources: list[dict[str, Any]], version: str) -> None:
        """Rename-swap so Envoy's directory watch sees a complete file."""
        body = json.dumps({"version_info": version, "resources": resources})
        tmp = self.xds_dir.parent / f".{filename}.tmp"
        tmp.write_text(body)
        os.replace(tmp, self.xds_dir / filename)

    async def _state(self, filename: str) -> tuple[str | None, int]:
        """(version Envoy serves, rejected updates so far) for one xDS file."""
        prefix = _STAT_KEYS[filename]
        stats = await self.envoy.stats(rf"^{re.escape(prefix)}\.(version_text|update_rejected)$")
        return stats.get(f"{prefix}.version_text"), int(stats.get(f"{prefix}.update_rejected", 0))

    async def _push(self, filename: str, resources: list[dict[str, Any]], timeout: float) -> None:
        if self._good.get(filename, ([], ""))[0] == resources:
            return
        self._version += 1
        version = str(self._version)
        _, rejected_before = await self._state(filename)
        self._write(filename, resources, version)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            serving, rejected = await self._state(filename)
            if serving == version:
                self._good[filename] = (resources, version)
                return
            if rejected > rejected_before:
                # Put the last good file back: any later rename in the directory makes Envoy re-read it.
                self._write(filename, *self._good[filename])
                raise MeshConfigRejected(
                    f"envoy rejected {filename} version {version}: {self.envoy.log_tail(5)}"
                )
            await asyncio.sleep(0.002)
        raise EnvoyError(f"envoy did not apply {filename} version {version} within {timeout}s")

    async def apply(self, routes: config.RouteSpec, timeout: float = 10.0) -> None:
        """Apply `routes`, clusters before routes; returns once Envoy serves it."""
        resources = config.local_resources(
            routes, self.listen_host, self.listen_port, self._route_source, str(self.access_log_path)
        )
        await self.apply_resources(resources, timeout)

    async def apply_resources(self, resources: config.Resources, timeout: float = 10.0) -> None:
        """Lower-level apply (clusters and routes only; the listener is fixed at start)."""
        async with self._lock:
            # Keep clusters the current routes still name until the new routes are in (no 503 window).
            union = {c["name"]: c for c in self._clusters} | {c["name"]: c for c in resources.clusters}
            await self._push("cds.json", list(union.values()), timeout)
            await self._push("rds.json", resources.routes, timeout)
            await self._push("cds.json", resources.clusters, timeout)
            self._clusters = resources.clusters

    async def stop(self) -> None:
        await self.envoy.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> LocalMesh:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
