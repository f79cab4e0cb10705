"""Flagger's load tester API over real HTTP on 127.0.0.1, running real commands (hey, bash, sleep)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryctl.loadtester import LoadTester, Policy, cli
from canaryctl.loadtester.auth import TokenHashes, token_hash
from tests.loadtester.helpers import idle, metric, payload, pids_running, standalone, until, with_loadtester
from tests.processes import exited

SLEEP = frozenset({"sleep"})


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

    with_loadtester(run)  # the default policy: hey is allowed


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
    with_loadtester(run, allow_commands=SLEEP)
    assert time.monotonic() - started < 5
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


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

    with_loadtester(run, timeout=0.5, allow_commands=SLEEP)


def test_cli_flags_make_the_policy(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="canaryctl")
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["loadtester", "--port", "9090", "--namespaces", "a,b", "--timeout", "1m30s"])
    assert (args.port, args.func) == (9090, cli.run)
    assert cli.policy(args) == Policy(namespaces=frozenset({"a", "b"}), timeout=90.0)
    (tmp_path / "team-a").write_text(token_hash("secret") + "\n")
    args = parser.parse_args(
        [
            "loadtester",
            "--allow-commands",
            "hey, k6",
            "--allow-bash",
            "--max-per-namespace",
            "3",
            "--token-hashes",
            str(tmp_path),
        ]
    )
    policy = cli.policy(args)
    assert (policy.allow_commands, policy.allow_bash, policy.max_per_namespace) == (
        frozenset({"hey", "k6"}),
        True,
        3,
    )
    (hashes,) = policy.authenticators
    assert isinstance(hashes, TokenHashes) and hashes.namespaces() == {"team-a"}
    assert not cli.policy(parser.parse_args(["loadtester", "--allow-commands", ""])).allow_commands
    for bad in (["--timeout", "soon"], ["--max-per-namespace", "0"], ["--max-per-namespace", "1001"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["loadtester", *bad])


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

    with_loadtester(run, allow_commands=frozenset({"echo"}), allow_bash=True)


def test_bad_requests_get_a_clear_4xx() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        cases: list[tuple[Any, int, str]] = [
            (b"{not json", 400, "request body is not valid JSON"),
            (b"[1, 2]", 400, "request body must be a JSON object"),
            (b'{"name": "x"}', 400, "payload needs string fields name and namespace"),
            (payload(), 400, "metadata.cmd is required"),
            (payload("hey", type="jmeter"), 400, "metadata.type 'jmeter' is not supported"),
            (payload("x", type="concord"), 400, "metadata.type 'concord' is not built in"),
            (payload("hey 'unbalanced"), 400, "metadata.cmd cannot be split into arguments"),
            (payload("/nonexistent/tool -x"), 400, "cannot start '/nonexistent/tool'"),
            (
                {**payload(), "metadata": {"cmd": 1}},
                400,
                "payload metadata must be an object of string values",
            ),
            (b"{" + b" " * 70_000 + b"}", 413, "Maximum request body size 65536 exceeded"),
        ]
        for body, status, message in cases:
            content = body if isinstance(body, bytes) else None
            response = await client.post("/", content=content, json=None if content else body)
            assert (response.status_code, response.text[: len(message)]) == (status, message), body
        assert (await client.get("/healthz")).text == "OK\n"

    with_loadtester(run, allow_commands=frozenset({"hey", "/nonexistent/tool"}))


def test_namespace_allow_list() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        refused = await client.post("/", json=payload("hey -n 1 http://127.0.0.1:9/", namespace="other"))
        assert (refused.status_code, refused.text) == (
            403,
            "namespace 'other' is not allowed on this load tester\n",
        )
        assert (await client.post("/gate/open", json=payload(namespace="other"))).status_code == 403
        assert (await client.post("/gate/open", json=payload(namespace="test"))).status_code == 202

    with_loadtester(run, namespaces=frozenset({"test", "prod"}))


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
            assert await status(f"/{kind}/check", namespace="prod") == 403
            assert await metric(client, f'canaryctl_loadtester_gates_open{{kind="{kind}"}}') == 1
            assert await status(f"/{kind}/close") == 202
            assert await status(f"/{kind}/check") == 403
        assert await status("/gate/open") == 202
        assert await status("/rollback/check") == 403

    with_loadtester(run)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_or_killed_standalone_service_leaves_no_command_running(stop: signal.Signals) -> None:
    """SIGTERM: the service stops its commands before it exits. SIGKILL runs no cleanup: the kernel
    stops them."""
    with standalone("--timeout", "1m", "--allow-commands", "sleep") as (base, service):
        marker = f"sleep 29.{base.rsplit(':', 1)[1]}"
        assert httpx.post(base, json=payload(marker), timeout=5).status_code == 200
        deadline = time.monotonic() + 10
        while len(pids := pids_running(marker)) != 1:  # forked at once; its cmdline is sleep's after exec
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        service.send_signal(stop)
        assert service.wait(timeout=10) == (0 if stop == signal.SIGTERM else -stop)
        if not exited(pids[0], timeout=0 if stop == signal.SIGTERM else 10):
            os.kill(pids[0], signal.SIGKILL)
            raise AssertionError("the command outlived the load tester")


def test_standalone_service_refuses_to_start_with_plain_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "team-a").write_text("s3cr3t-token\n")
    parser = argparse.ArgumentParser(prog="canaryctl")
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["loadtester", "--token-hashes", str(tmp_path)])
    with caplog.at_level(logging.ERROR):
        assert cli.run(args) == 2
    assert f"{tmp_path / 'team-a'}:1: expected the hex SHA-256 of a token" in caplog.text
    assert "s3cr3t-token" not in caplog.text
