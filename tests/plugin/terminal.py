"""A real terminal for output tests: a pseudo-terminal whose slave side becomes ``sys.stdout``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import struct
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Captured:
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()


@contextlib.contextmanager
def terminal(monkeypatch: pytest.MonkeyPatch, columns: int = 120, **environ: str) -> Iterator[Captured]:
    """stdout is a ``columns``-wide terminal (raw mode: no CR added) while the block runs."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    for name in ("NO_COLOR", "TERM", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    captured = Captured()

    def drain() -> None:
        with contextlib.suppress(OSError):  # EIO once the slave side is closed
            while chunk := os.read(master, 65536):
                captured.chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stream = open(slave, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        yield captured
    finally:
        stream.flush()
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
        stream.close()
        reader.join(timeout=5)
        os.close(master)
