"""The load tester served over real HTTP on 127.0.0.1, as in-process app or as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestServer

from canaryctl.loadtester import LOADTESTER, LoadTester, Policy, build_app
from canaryctl.local.prometheus import free_port

Test = Callable[[httpx.AsyncClient, LoadTester], Awaitable[None]]


def payload(
    cmd: str | None = None, name: str = "podinfo", namespace: str | None = "test", **meta: str
) -> dict[str, Any]:
    metadata = dict(meta)
    if cmd is not None:
        metadata["cmd"] = cmd
    body: dict[str, Any] = {"name": name, "phase": "Progressing", "checksum": "x", "metadata": metadata}
    if namespace is not None:
        body["namespace"] = namespace
    return body


def with_loadtester(test: Test, policy: Policy | None = None, **settings: Any) -> None:
    """Runs ``test`` against a load tester served as ``serve`` does (handler cancellation on)."""
    policy = policy or Policy(**({"timeout": 20.0} | settings))

    async def main() -> None:
        app = build_app(policy)
        server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
                await test(client, app[LOADTESTER])
        finally:
            await server.close()

    asyncio.run(main())


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Polls ``check`` every 50 ms, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def metric(client: httpx.AsyncClient, line_start: str) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


async def idle(client: httpx.AsyncClient) -> bool:
    return await metric(client, "canaryctl_loadtester_commands_running ") == 0


def pids_running(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a per-test unique argument)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def standalone(*flags: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m canaryctl.loadtester`` on a free loopback port: its base URL and the process."""
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "canaryctl.loadtester", "--host", "127.0.0.1", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30  # imports alone take seconds on a busy machine
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert service.poll() is None, "load tester exited at start"
                assert time.monotonic() < deadline, "load tester did not start"
                time.sleep(0.05)
        yield base, service
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=5)
        assert service.stderr is not None
        service.stderr.close()
