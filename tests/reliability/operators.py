"""``canaryctl operator`` as child processes against kmock's emulator, killed by PID.

A process of its own, unlike the operator suite's in-thread operators: it can be SIGKILLed mid-tick,
and it does not share the test's GIL with the emulator.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import kmock
import pytest_asyncio

from tests.kube.cluster import PrometheusStub
from tests.kube.emulator import emulator_url

FAST = ["--metrics-port", "0", "--min-interval-seconds", "0.3"]
STANDALONE = ("--standalone", *FAST)


@dataclass
class OperatorProcesses:
    """Starts ``canaryctl operator`` processes and kills them by PID; ``current`` is the last started."""

    server: str
    prometheus: str
    logs: Path
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def started(self) -> int:
        return len(self.processes)

    @property
    def current(self) -> asyncio.subprocess.Process:
        return self.processes[-1]

    async def start(self, *options: str) -> asyncio.subprocess.Process:
        log = (self.logs / f"operator-{self.started + 1}.log").open("wb")
        command = ["-m", "canaryctl.cli.main", "operator", "--server", self.server]
        command += ["--prometheus-url", self.prometheus, *(options or STANDALONE)]
        with log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *command, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    @staticmethod
    async def kill(process: asyncio.subprocess.Process) -> None:
        assert process.returncode is None, "the operator exited early"
        process.kill()
        await asyncio.wait_for(process.wait(), 10)

    async def kill_all(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                await self.kill(process)


@pytest_asyncio.fixture()
async def operators(
    emulator: kmock.KubernetesEmulator,
    prometheus: PrometheusStub,
    tmp_path: Path,
) -> AsyncIterator[OperatorProcesses]:
    processes = OperatorProcesses(emulator_url(emulator), prometheus.url, tmp_path)
    try:
        yield processes
    finally:
        await processes.kill_all()
