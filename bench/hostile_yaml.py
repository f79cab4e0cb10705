"""Hostile YAML against ``canaryctl lint``: time and memory of each refusal, and of the largest input.

Each probe is linted in this process (the time of reading and checking alone) and through the CLI in
a child process (what a user waits for, interpreter start included, and the child's peak RSS). The
last line is one JSON object.

    .venv/bin/python -m bench.hostile_yaml
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from canaryctl.api.lint import lint_sources
from canaryctl.api.yaml_loader import MAX_INPUT_BYTES

HEADER = "apiVersion: canaryctl.dev/v1beta1\nkind: Canary\nmetadata: {name: lol, namespace: test}\n"


def alias_bomb() -> str:
    lines = ["spec:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    lines.append("  targetRef: {kind: *i, name: lol}")
    return HEADER + "\n".join(lines) + "\n"


def deep_nesting() -> str:
    return HEADER + "spec:\n  service: " + "[" * 1000 + "]" * 1000 + "\n"


def duplicate_keys() -> str:
    return HEADER + "spec:\n  service: {port: 80}\n  service: {port: 81}\n"


def largest_input() -> str:
    """Just under the size limit, as many tiny documents as fit: the most work per byte for a parser."""
    document = "---\na: 1\n"
    return document * ((MAX_INPUT_BYTES - 1) // len(document))


PROBES: dict[str, Callable[[], str]] = {
    "alias_bomb": alias_bomb,
    "deep_nesting": deep_nesting,
    "duplicate_keys": duplicate_keys,
    "largest_input": largest_input,
}


def in_process_seconds(text: str) -> float:
    started = time.perf_counter()
    lint_sources([("bench.yaml", text)])
    return time.perf_counter() - started


def cli(path: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit status of ``canaryctl lint PATH`` in a child process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "canaryctl.cli.main", "lint", str(path)],
        capture_output=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return seconds, peak_kb / 1024, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    report: dict[str, float | int] = {"max_input_bytes": MAX_INPUT_BYTES}
    with tempfile.TemporaryDirectory() as directory:
        for name, make in PROBES.items():  # smallest first: ru_maxrss only grows
            text = make()
            path = Path(directory) / f"{name}.yaml"
            path.write_text(text)
            report[f"{name}_bytes"] = len(text.encode())
            report[f"{name}_lint_seconds"] = round(in_process_seconds(text), 4)
            seconds, peak_mb, status = cli(path)
            report[f"{name}_cli_seconds"] = round(seconds, 3)
            report[f"{name}_cli_peak_rss_mb"] = round(peak_mb, 1)
            report[f"{name}_cli_exit"] = status
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
