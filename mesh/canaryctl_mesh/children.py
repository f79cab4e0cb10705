"""Child processes that die with the process that started them.

A parent killed with SIGKILL runs no cleanup, so on Linux each long-lived child (Envoy, Prometheus, a
load tester's command) asks the kernel with prctl(PR_SET_PDEATHSIG) for SIGKILL when its parent goes.
The kernel sends that signal when the *thread* that forked the child ends, not the process, so `spawn`
forks from one daemon thread that lives as long as the process: a child started from a worker thread
(asyncio.to_thread) outlives that thread. Where prctl does not exist (macOS), children are ordinary
ones and a parent killed with SIGKILL can leave them running.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1


def _prctl() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the child killed when the calling thread of this process ends; None
    where that cannot be done."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


class _Spawner:
    """The one thread every child is forked from."""

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
    preexec = die_with_parent()
    if preexec is None:
        return subprocess.Popen(args, **options)
    return _SPAWNER.run(lambda: subprocess.Popen(args, preexec_fn=preexec, **options))
