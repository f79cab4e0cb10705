"""The load tester over real HTTP on 127.0.0.1, running real commands (hey, bash, sleep)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryctl.loadtester import LOADTESTER, LoadTester, build_app, cli
from canaryctl.local.prometheus import free_port

Test = Callable[[httpx.AsyncClient, LoadTester], Awaitable[None]]


def payload(
    cmd: str | None = None, name: str = "podinfo", namespace: str = "test", **meta: str
) -> dict[str, Any]:
    metadata = dict(meta)
    if cmd is not None:
        metadata["cmd"] = cmd
    return {
        "name": name,
        "namespace": namespace,
        "phase": "Progressing",
        "checksum": "x",
        "metadata": metadata,
    }


def with_loadtester(test: Test, namespaces: tuple[str, ...] = (), timeout: float = 20) -> None:
    async def main() -> None:
        app = build_app(namespaces, timeout=timeout)
        server = TestServer(app, host="127.0.0.1")
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


def test_hey_runs_in_the_background_against_a_local_server() -> None:
    hits: list[str] = []

    async def count(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        target = web.Application()
        target.router.add_get("/", count)
        server = TestServer(target, host="127.0.0.1")
        await server.start_server()
        try:
            cmd = f"hey -n 20 -c 2 http://127.0.0.1:{server.port}/"
            response = await client.post("/", json=payload(cmd, logCmdOutput="true"))
            assert (response.status_code, response.text) == (200, "command started for podinfo.test\n")

            async def all_hits() -> bool:
                return len(hits) == 20

            await until(all_hits)
            await until(lambda: idle(client))
            assert await metric(client, 'canaryctl_loadtester_commands_started_total{type="cmd"}') == 1
            assert await metric(client, "canaryctl_loadtester_commands_failed_total") == 0
        finally:
            await server.close()

    with_loadtester(run)


def test_a_running_command_is_deduplicated_per_canary_and_killed_on_shutdown() -> None:
    pids: list[int] = []

    async def run(client: httpx.AsyncClient, tester: LoadTester) -> None:
        first, again = await asyncio.gather(
            client.post("/", json=payload("sleep 30")), client.post("/", json=payload("sleep 30"))
        )
        other = await client.post("/", json=payload("sleep 30", name="other"))
        # Sent concurrently: exactly one starts, whichever the server handled first.
        assert {first.text, again.text} == {
            "command started for podinfo.test\n",
            "command already running for podinfo.test\n",
        }
        assert other.text == "command started for other.test\n"
        assert await metric(client, "canaryctl_loadtester_commands_running ") == 2
        pids.extend(tester.pids())
        assert len(pids) == 2

    started = time.monotonic()
    with_loadtester(run)
    assert time.monotonic() - started < 5
    for pid in pids:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"child {pid} survived the shutdown")
        except ProcessLookupError:
            pass


def test_commands_are_stopped_at_the_timeout() -> None:
    async def run(client: httpx.AsyncClient, tester: LoadTester) -> None:
        started = time.monotonic()
        assert (await client.post("/", json=payload("sleep 30"))).status_code == 200
        (pid,) = tester.pids()
        await until(lambda: idle(client), seconds=5)
        assert time.monotonic() - started < 3
        assert await metric(client, 'canaryctl_loadtester_commands_failed_total{type="cmd"}') == 1
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    with_loadtester(run, timeout=0.5)


def test_cli_parser_wires_into_a_main_cli() -> None:
    parser = argparse.ArgumentParser(prog="canaryctl")
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["loadtester", "--port", "9090", "--namespaces", "a,b", "--timeout", "1m30s"])
    assert (args.port, args.namespaces, args.timeout, args.func) == (9090, "a,b", 90.0, cli.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["loadtester", "--timeout", "soon"])


def test_cmd_never_goes_through_a_shell_and_bash_only_when_asked(tmp_path: Path) -> None:
    plain, chained, bashed = tmp_path / "plain", tmp_path / "chained", tmp_path / "bashed"

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        cmd = f"echo $(touch {plain}); touch {chained}"
        assert (await client.post("/", json=payload(cmd, logCmdOutput="true"))).status_code == 200
        await until(lambda: idle(client))
        # echo got "$(touch", "...);", "touch", "..." as literal arguments: nothing was created.
        assert not plain.exists() and not chained.exists()

        response = await client.post("/", json=payload(f"touch {bashed} && echo done", type="bash"))
        assert (response.status_code, response.text) == (200, "done\n")
        assert bashed.exists()

        failing = await client.post("/", json=payload("echo broken; exit 3", type="bash"))
        assert failing.status_code == 400
        assert failing.text == "command 'echo broken; exit 3' exited with 3: broken\n"
        assert await metric(client, 'canaryctl_loadtester_commands_failed_total{type="bash"}') == 1

    with_loadtester(run)


def test_bad_requests_get_a_clear_4xx() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        cases: list[tuple[Any, int, str]] = [
            (b"{not json", 400, "request body is not valid JSON"),
            (b"[1, 2]", 400, "request body must be a JSON object"),
            (b'{"name": "x"}', 400, "payload needs string fields name and namespace"),
            (payload(), 400, "metadata.cmd is required"),
            (payload("hey", type="helm"), 400, "metadata.type 'helm' is not supported"),
            (payload("hey 'unbalanced"), 400, "metadata.cmd cannot be split into arguments"),
            (payload("/nonexistent/tool -x"), 400, "cannot start '/nonexistent/tool'"),
            (
                {**payload(), "metadata": {"cmd": 1}},
                400,
                "payload metadata must be an object of string values",
            ),
        ]
        for body, status, message in cases:
            content = body if isinstance(body, bytes) else None
            response = await client.post("/", content=content, json=None if content else body)
            assert (response.status_code, response.text[: len(message)]) == (status, message), body
        assert (await client.get("/healthz")).text == "OK\n"

    with_loadtester(run)


def test_namespace_allow_list() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        refused = await client.post("/", json=payload("true", namespace="other"))
        assert (refused.status_code, refused.text) == (
            403,
            "namespace 'other' is not allowed on this load tester\n",
        )
        assert (await client.post("/gate/open", json=payload(namespace="other"))).status_code == 403
        assert (await client.post("/", json=payload("true", namespace="test"))).status_code == 200
        await until(lambda: idle(client))

    with_loadtester(run, namespaces=("test", "prod"))


def test_gates_flow() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        async def status(path: str, **kw: str) -> int:
            return (await client.post(path, json=payload(**kw))).status_code

        assert await status("/gate/approve") == 200
        assert await status("/gate/halt") == 403
        for kind in ("gate", "rollback"):
            assert await status(f"/{kind}/check") == 403
            assert await status(f"/{kind}/open") == 202
            assert await status(f"/{kind}/check") == 200
            assert await status(f"/{kind}/check", name="other") == 403
            assert await metric(client, f'canaryctl_loadtester_gates_open{{kind="{kind}"}}') == 1
            assert await status(f"/{kind}/close") == 202
            assert await status(f"/{kind}/check") == 403
        assert await status("/gate/open") == 202
        assert await status("/rollback/check") == 403

    with_loadtester(run)


def _pids_running(marker: str) -> list[int]:
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


def test_standalone_service_stops_its_children_on_sigterm() -> None:
    port = free_port()
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canaryctl.loadtester",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout",
            "1m",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = f"sleep 29.{port}"
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "load tester did not start"
                time.sleep(0.05)
        assert httpx.post(base, json=payload(marker), timeout=5).status_code == 200
        assert len(_pids_running(marker)) == 1
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
        assert _pids_running(marker) == []
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=5)
        assert service.stderr is not None
        service.stderr.close()
