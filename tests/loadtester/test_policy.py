"""What a caller may make the load tester run: the allow-list, bash, Flagger's tool types, the
per-namespace limit, and tasks that end with their caller. Real processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from canaryctl.loadtester import LoadTester
from tests.loadtester.helpers import idle, metric, payload, pids_running, standalone, until, with_loadtester

TOOLS = Path(__file__).resolve().parents[2] / ".tools" / "bin"


def test_only_allowed_executables_run(tmp_path: Path) -> None:
    created = tmp_path / "created"

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        for cmd in (
            f"sh -c 'touch {created}'",
            f"/usr/bin/env touch {created}",
            f'python3 -c \'open("{created}", "w")\'',
            "/usr/bin/hey -n 1 http://127.0.0.1:9/",  # allowed by name only, not by a path the caller picks
            "canaryctl loadtester --allow-bash --port 18080",  # would be a second, unrestricted load tester
        ):
            refused = await client.post("/", json=payload(cmd))
            executable = cmd.split()[0]
            assert refused.status_code == 403, cmd
            allowed = "curl, ghz, grpcurl, hey, k6"
            assert (
                refused.text == f"{executable!r} is not an allowed command on this load tester ({allowed})\n"
            )
        assert await metric(client, 'canaryctl_loadtester_requests_refused_total{reason="forbidden"}') == 5
        assert await metric(client, "canaryctl_loadtester_commands_started_total") == 0
        await until(lambda: idle(client))
        assert not created.exists()

    with_loadtester(run)


def test_an_empty_allow_list_runs_nothing() -> None:
    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        refused = await client.post("/", json=payload("hey -n 1 http://127.0.0.1:9/"))
        assert (refused.status_code, refused.text) == (
            403,
            "'hey' is not an allowed command on this load tester (none)\n",
        )

    with_loadtester(run, allow_commands=frozenset())


def test_bash_is_off_unless_enabled(tmp_path: Path) -> None:
    marker = tmp_path / "bash-ran"
    bash = payload(f"touch {marker}", type="bash")

    async def refused(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        response = await client.post("/", json=bash)
        assert (response.status_code, response.text) == (
            403,
            "type: bash is disabled on this load tester (start it with --allow-bash)\n",
        )

    async def allowed(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        assert (await client.post("/", json=bash)).status_code == 200

    with_loadtester(refused)
    assert not marker.exists()
    with_loadtester(allowed, allow_bash=True)
    assert marker.exists()


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).exists() else None)
    if found is None:
        pytest.skip(f"no {name} binary on PATH nor in .tools/bin (make tools)")
    return found


@pytest.mark.parametrize(
    ("kind", "tool", "cmd", "expected"),
    [
        ("helm", "helm", "version --short", "v4."),
        ("helmv3", "helm", "version --short", "v4."),
        ("kubectl", "kubectl", "version --client", "Client Version: v1."),
    ],
)
def test_flaggers_tool_types_run_the_tool_only_when_allowed(
    kind: str, tool: str, cmd: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flagger runs ``<tool> <cmd>`` for these types and answers with the result; so does canaryctl,
    when the tool is on the allow-list (it is not by default: it acts with the pod's credentials)."""
    monkeypatch.setenv("PATH", f"{Path(_tool(tool)).parent}{os.pathsep}{os.environ['PATH']}")
    hook = payload(cmd, type=kind)

    async def refused(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        response = await client.post("/", json=hook)
        assert response.status_code == 403
        assert response.text.startswith(f"{tool!r} is not an allowed command")

    async def allowed(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        response = await client.post("/", json=hook)
        assert response.status_code == 200, response.text
        assert response.text.startswith(expected)
        failing = await client.post("/", json=payload("no-such-subcommand", type=kind))
        assert failing.status_code == 400
        assert failing.text.startswith("command 'no-such-subcommand' exited with 1: ")

    with_loadtester(refused)
    with_loadtester(allowed, allow_commands=frozenset({tool}))


def test_concurrency_is_limited_per_namespace() -> None:
    unique = f"{uuid.uuid4().int % 10**6:06d}"
    first, second, third = (f"sleep {seconds}.{unique}" for seconds in (30, 31, 32))

    async def run(client: httpx.AsyncClient, tester: LoadTester) -> None:
        for cmd in (first, second):
            assert (await client.post("/", json=payload(cmd))).status_code == 200
        refused = await client.post("/", json=payload(third))
        assert (refused.status_code, refused.text) == (429, "namespace 'test' already runs 2 commands\n")
        waited = await client.post("/", json=payload("sleep 0", type="bash"))
        assert waited.status_code == 429  # waited-for tasks take a slot too
        # The same command again is not a new one; another namespace has slots of its own.
        assert (
            await client.post("/", json=payload(first))
        ).text == "command already running for podinfo.test\n"
        assert (await client.post("/", json=payload(third, namespace="prod"))).status_code == 200
        assert len(tester.pids()) == 3

        (pid,) = set(pids_running(first)) & set(tester.pids())
        os.kill(pid, signal.SIGTERM)  # the first command ends: its slot is free again

        async def freed() -> bool:
            return len(tester.pids()) == 2

        await until(freed, seconds=10)
        assert (await client.post("/", json=payload(third))).status_code == 200
        assert await metric(client, 'canaryctl_loadtester_requests_refused_total{reason="limit"}') == 2

    with_loadtester(run, allow_commands=frozenset({"sleep"}), allow_bash=True, max_per_namespace=2)


@pytest.mark.slow
def test_a_caller_that_hangs_up_takes_its_waited_task_with_it() -> None:
    """A webhook timeout closes the connection: the bash task and everything it started are stopped,
    as served by ``canaryctl loadtester`` itself (not a test server)."""
    marker = f"sleep 3{uuid.uuid4().int % 10**6:06d}"  # unique among every process on the machine

    async def hang_up(base: str) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            call = asyncio.create_task(
                client.post(base, json=payload(f"{marker} & {marker}; wait", type="bash"))
            )

            async def started() -> bool:
                return len(pids_running(marker)) == 3  # bash -c "...", and its two sleeps

            await until(started, seconds=15)
            call.cancel()  # the caller gives up, as at its webhook timeout, and closes the connection
            with pytest.raises(asyncio.CancelledError):
                await call

        async def gone() -> bool:
            return not pids_running(marker)

        await until(gone, seconds=20)  # well before the load tester's own 1 min timeout

    with standalone("--allow-bash", "--timeout", "1m") as (base, _service):
        asyncio.run(hang_up(base))
        running = httpx.get(f"{base}/metrics", timeout=5).text
        assert "canaryctl_loadtester_commands_running 0.0" in running
        assert 'canaryctl_loadtester_commands_failed_total{type="bash"} 1.0' in running
