"""Hostile YAML through every command that reads a user's manifests, run as a user runs them.

Each probe runs ``canaryctl lint``, ``canaryctl local run`` and ``kubectl canary convert`` in a child
process with a memory ceiling and a deadline: the answer must be a refusal naming the line, never a
traceback, an out-of-memory or a hang.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from canaryctl.api.yaml_loader import MAX_ALIAS_NODES, MAX_DEPTH, MAX_INPUT_BYTES

pytestmark = pytest.mark.slow  # a dozen CLI processes

CANARYCTL = [sys.executable, "-m", "canaryctl.cli.main"]
MEMORY_CEILING = 1536 * 1024 * 1024  # address space: Python and its libraries need a few hundred MiB
DEADLINE_SECONDS = 30  # generous for a loaded machine; bench.hostile_yaml measures the real figures

HEADER = "apiVersion: canaryctl.dev/v1beta1\nkind: Canary\nmetadata: {name: lol, namespace: test}\n"


def alias_bomb() -> str:
    """Billion laughs: nine levels of nine aliases, 9**9 strings once expanded, in a few hundred bytes."""
    lines = ["spec:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    lines.append("  targetRef: {kind: *i, name: lol}")  # an enum error used to repr() the expansion
    return HEADER + "\n".join(lines) + "\n"


def deep_nesting() -> str:
    levels = 1000
    return HEADER + "spec:\n  service: " + "[" * levels + "]" * levels + "\n"


def deep_block_nesting() -> str:
    return HEADER + "spec:\n" + "".join("  " * depth + "a:\n" for depth in range(1, 300))


def duplicate_keys() -> str:
    return HEADER + (
        "spec:\n"
        "  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n"
        "  service: {port: 80}\n"
        "  analysis:\n"
        "    interval: 1m\n"
        "    stepWeight: 10\n"
        "    threshold: 5\n"
        "    threshold: 500\n"
    )


PROBES = {
    "alias-bomb": (alias_bomb, 9, f"aliases expand to more than {MAX_ALIAS_NODES} nodes"),
    "deep-flow-nesting": (deep_nesting, 5, "nesting"),
    "deep-block-nesting": (deep_block_nesting, 3 + MAX_DEPTH, f"nesting deeper than {MAX_DEPTH} levels"),
    "duplicate-keys": (duplicate_keys, 11, "duplicate key 'threshold' (first on line 10)"),
}
COMMANDS = {
    "lint": (["lint"], 1),
    "local-run": (["local", "run", "--primary", "http://127.0.0.1:1", "--canary", "http://127.0.0.1:2"], 3),
    "convert": (["convert", "-f"], 2),
}


def run_bounded(args: list[str]) -> subprocess.CompletedProcess[str]:
    # prlimit (util-linux) rather than a preexec_fn: that would fork() this process, whose gRPC threads
    # (from earlier tests) can abort the child in their at-fork handler.
    return subprocess.run(
        ["prlimit", f"--as={MEMORY_CEILING}", "--", *CANARYCTL, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
    )


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("probe", list(PROBES))
def test_hostile_yaml_is_refused_with_its_line(tmp_path: Path, probe: str, command: str) -> None:
    make, line, message = PROBES[probe]
    path = tmp_path / "canary.yaml"
    path.write_text(make())
    args, exit_code = COMMANDS[command]
    done = run_bounded([*args, str(path)])
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "MemoryError" not in output, output[-2000:]
    assert done.returncode == exit_code, output[-2000:]
    assert f"{path}:{line}" in output or f"line {line}:" in output, output[-2000:]
    assert message in output, output[-2000:]


def test_the_alias_bomb_is_small() -> None:
    assert len(alias_bomb().encode()) < 1024


def test_input_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEADER + "spec: {}\n" + "#" * MAX_INPUT_BYTES + "\n")
    for args, exit_code in COMMANDS.values():
        done = run_bounded([*args, str(path)])
        assert done.returncode == (2 if args == ["lint"] else exit_code), done.stderr
        assert f"{path} is larger than {MAX_INPUT_BYTES} bytes" in done.stderr
        assert "Traceback" not in done.stderr
