"""Child processes that die with the process that started them.

A parent killed with SIGKILL runs no cleanup, so on Linux each long-lived child (Envoy, Prometheus, a
load tester's command) starts under util-linux's `setpriv --pdeathsig KILL`, which asks the kernel
(prctl PR_SET_PDEATHSIG) for SIGKILL when its parent goes and then execs the command.

Not a preexec_fn doing the same prctl: a preexec_fn makes Python fork() instead of vfork(), and fork()
runs every library's at-fork handlers; gRPC's (the xDS server, OTLP exporters) abort children forked
while other threads are inside gRPC, so Envoy or Prometheus would sometimes never start.

The kernel sends the signal when the *thread* that started the child ends, not the process, so `spawn`
starts children from one daemon thread that lives as long as the process: a child started from a worker
thread (asyncio.to_thread) outlives that thread. Where setpriv does not exist (macOS, images without
util-linux), children are ordinary ones and a parent killed with SIGKILL can leave them running.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def die_with_parent(args: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`args` as a command that is killed when the calling thread of this process ends (unchanged
    where that cannot be done). A missing program raises FileNotFoundError here, as Popen would."""
    if _SETPRIV is None:
        return args
    program = shutil.which(args[0], path=os.pathsep.join(os.get_exec_path(env)))
    if program is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), args[0])
    return [_SETPRIV, "--pdeathsig", "KILL", "--", program, *args[1:]]


class _Spawner:
    """The one thread every child is started from."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="child-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((start, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            start, done = self._requests.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # handed to the caller, who raises it
                done.set_exception(exc)


_SPAWNER = _Spawner()


def spawn(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen for a child that must not outlive this process."""
    command = die_with_parent(args, options.get("env"))
    if command is args:
        return subprocess.Popen(args, **options)
    return _SPAWNER.run(lambda: subprocess.Popen(command, **options))
