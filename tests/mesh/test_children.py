"""Children started through canaryctl_mesh.children die with their parent process, and only then."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from canaryctl_mesh.children import spawn
from tests.processes import exited

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")


def test_a_child_spawned_from_a_thread_outlives_that_thread() -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "60"])))
    thread.start()
    thread.join(10)
    child = started[0]
    try:
        assert not exited(child.pid, 1.0), "the child died with the thread that asked for it"
    finally:
        child.kill()
        child.wait(10)


PARENT = """
import sys, time
from canaryctl_mesh.children import spawn
from tests.processes import exited
print(spawn(["sleep", "60"]).pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not exited(child, 0.5)
        parent.kill()
        parent.wait(10)
        assert exited(child, 10), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child and not exited(child, 0):
            os.kill(child, signal.SIGKILL)


def _echo(request: bytes, _context: object) -> bytes:
    return request


def test_children_start_while_other_threads_are_inside_grpc() -> None:
    """The local runtime serves xDS over gRPC in the process that starts Envoy and Prometheus; a child
    forked while gRPC's threads poll used to abort in gRPC's at-fork handler (about 1 start in 40)."""
    import asyncio

    import grpc

    async def busy_grpc_while_spawning(count: int) -> list[int]:
        server = grpc.aio.server()
        echo = grpc.unary_unary_rpc_method_handler(_echo)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"E": echo}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        calling = True

        async def call_until_done() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/t.T/E")
                while calling:
                    await call(b"x", timeout=5)

        callers = [asyncio.create_task(call_until_done()) for _ in range(4)]
        codes = []
        try:
            for _ in range(count):
                child = await asyncio.to_thread(spawn, ["true"])
                codes.append(await asyncio.to_thread(child.wait, 10))
        finally:
            calling = False
            await asyncio.gather(*callers)
            await server.stop(None)
        return codes

    codes = asyncio.run(busy_grpc_while_spawning(300))
    assert codes == [0] * 300, f"{sum(1 for c in codes if c)} of 300 children failed to start"
