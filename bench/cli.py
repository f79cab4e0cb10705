"""How fast ``kubectl canary`` answers, as a user runs it: a fresh process each time.

``help_s``: ``kubectl canary --help``. ``list_s``: ``kubectl canary list -A`` through a kubeconfig
against a local API server (kmock's emulator in this process, on loopback) holding ``--canaries``
Canaries. Each figure is the median wall time of ``--runs`` runs of the installed ``kubectl-canary``
script; the maxima, the CPU time and the machine's load average are printed too (wall time on a
shared, busy machine says more about the neighbours). Goals: help < 0.2 s, list < 0.5 s.

    .venv/bin/python -m bench.cli [--runs 15] [--canaries 20]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from tests.kube.emulator import emulator_url, running_emulator
from tests.plugin import scenarios

HELP_GOAL_S, LIST_GOAL_S = 0.2, 0.5


class BackgroundEmulator:
    """The emulator served from its own thread and event loop while the benchmark runs processes."""

    def __init__(self, canaries: int) -> None:
        self.canaries = canaries
        self.url = ""
        self._ready, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async with running_emulator(keep_requests=False) as emulator:
            template = scenarios.progressing()[0]
            for index in range(self.canaries):
                obj = copy.deepcopy(template)
                obj["metadata"]["name"] = f"app-{index:03d}"
                scenarios.seed(emulator, [obj])
            self.url = emulator_url(emulator)
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)

    def __enter__(self) -> BackgroundEmulator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulator did not start within 30 s")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def kubeconfig(directory: Path, server: str) -> Path:
    path = directory / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": server}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def timed(argv: Sequence[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall time and CPU time (user + system) of each run; every run must succeed. On a busy machine the
    wall time grows with the load, the CPU time hardly: both are reported."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return walls, cpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--canaries", type=int, default=20)
    args = parser.parse_args(argv)
    plugin = shutil.which("kubectl-canary", path=str(Path(sys.executable).parent))
    if plugin is None:
        raise SystemExit("kubectl-canary is not installed next to this Python (make venv)")
    with BackgroundEmulator(args.canaries) as api, tempfile.TemporaryDirectory() as directory:
        config = kubeconfig(Path(directory), api.url)
        timed([plugin, "--help"], 2)  # warm the page cache and the bytecode
        help_times, help_cpu = timed([plugin, "--help"], args.runs)
        listing = [plugin, "list", "-A", "--kubeconfig", str(config)]
        shown = subprocess.run(listing, capture_output=True, text=True, timeout=60, check=True).stdout
        if shown.count("app-") != args.canaries:
            raise RuntimeError(f"list showed {shown.count('app-')} of {args.canaries} canaries:\n{shown}")
        list_times, list_cpu = timed(listing, args.runs)
    load = os.getloadavg()[0]
    result = {
        "help_s": round(statistics.median(help_times), 3),
        "list_s": round(statistics.median(list_times), 3),
        "help_s_max": round(max(help_times), 3),
        "list_s_max": round(max(list_times), 3),
        "help_cpu_s": round(statistics.median(help_cpu), 3),
        "list_cpu_s": round(statistics.median(list_cpu), 3),
        "load_average": round(load, 2),
        "help_goal_s": HELP_GOAL_S,
        "list_goal_s": LIST_GOAL_S,
        "runs": args.runs,
        "canaries": args.canaries,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
