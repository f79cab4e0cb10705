"""Real parts for the meshd tests: kmock's emulator, loopback upstreams, `meshd` as a child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from canaryctl.local.prometheus import free_port
from canaryctl_mesh.loopback import UpstreamServers
from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401
from tests.mesh.objects import traffic_split as split_between
from tests.tls import self_signed_certificate

NS = "test"
PRIMARY, CANARY = "web-primary", "web-canary"

# The lead wires `meshd` into the main CLI; until then (and independently of it) run the module's parser.
_MESHD = (
    "import argparse, sys\n"
    "from canaryctl_mesh.meshd import cli\n"
    "parser = argparse.ArgumentParser(prog='canaryctl')\n"
    "cli.add_parser(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


class Meshd:
    """`canaryctl meshd ...` as a child process, stopped with SIGTERM (then SIGKILL) by its PID."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, metrics_port: int) -> None:
        self.proc = proc
        self.log = log
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"meshd ignored SIGTERM for {timeout}s: {self.log.read_text()}") from None


@pytest_asyncio.fixture
async def meshd(tmp_path: Path) -> AsyncIterator[Any]:
    """Start meshd children with `await meshd(*args)`; every one is terminated by PID afterwards."""
    started: list[Meshd] = []

    async def start(*args: str) -> Meshd:
        """Its /metrics on a free port, whatever `args` say (the default, 8080, may be taken here)."""
        metrics_port = free_port()
        arguments = list(args)
        if "--metrics-port" in arguments:
            arguments[arguments.index("--metrics-port") + 1] = str(metrics_port)
        else:
            arguments += ["--metrics-port", str(metrics_port)]
        log = tmp_path / f"meshd-{len(started)}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _MESHD, "meshd", *arguments, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(Meshd(proc, log, metrics_port))
        return started[-1]

    yield start
    for child in started:
        await child.terminate()


@pytest.fixture
def upstreams() -> Iterator[UpstreamServers]:
    with UpstreamServers([PRIMARY, CANARY]) as servers:
        yield servers


def service(name: str, cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80}]},
    }


def endpoint_slice(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }


def traffic_split(name: str, primary: int, canary: int, canary_service: str = CANARY) -> dict[str, Any]:
    return split_between(NS, name, (primary, canary), (PRIMARY, canary_service))


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 (SAN), made with the openssl CLI."""
    return self_signed_certificate(tmp_path, "canaryctl-injector")
