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
