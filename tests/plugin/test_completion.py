"""Shell completion run by the real shells and by the real kubectl: sub-commands, flags, choices and the
names of the Canaries in the cluster (the emulator), from the parser through argcomplete."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import kmock
import pytest

from canaryctl.cli.main import main
from tests.kube.emulator import emulator_url
from tests.plugin import scenarios

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
KUBECTL = Path(__file__).parents[2] / ".tools" / "bin" / "kubectl"


def script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


async def run(*command: str, stdin: str | None = None) -> str:
    """A shell or kubectl with this venv's kubectl-canary and kubectl_complete-canary on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": "/nonexistent"}
    env.pop("_ARGCOMPLETE", None)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


NAMES = ["done", "failing", "podinfo"]


def installed(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        pytest.skip(f"{shell} is not installed (scripts/install-system-deps.sh installs it)")
    return found


def seeded(emulator: kmock.KubernetesEmulator) -> str:
    for make in (scenarios.progressing, scenarios.failed, scenarios.succeeded):
        scenarios.seed(emulator, make())
    return emulator_url(emulator)


@pytest.mark.asyncio
@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl is installed by `make tools`")
async def test_kubectl_completes_the_plugin_through_kubectl_complete_canary(
    emulator: kmock.KubernetesEmulator,
) -> None:
    server = seeded(emulator)

    async def complete(*words: str) -> list[str]:
        out = await run(str(KUBECTL), "__complete", "canary", *words)
        return out.splitlines()

    assert await complete("st") == ["status", ":4"]
    assert await complete("list", "-o", "") == ["json", "yaml", "wide", "name", ":4"]
    assert "--until" in await complete("status", "--")
    names = await complete("status", "--server", server, "-n", "test", "")
    assert names == ["done", "failing", "podinfo", ":4"]
    assert await complete("abort", "--server", server, "-n", "test", "fa") == ["failing", ":4"]
    assert await complete("lint", "") == [":0"], "file arguments are left to the shell"


@pytest.mark.asyncio
async def test_bash(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    bash = installed("bash")
    server = seeded(emulator)
    code = script("bash", capsys)

    async def complete(line: str) -> list[str]:
        words = line.split(" ")
        probe = (
            f"{code}\nCOMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({' '.join(words)} ); "
            f"COMP_CWORD={len(words) - 1}; _python_argcomplete kubectl-canary; "
            "printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        return (await run(bash, "-c", probe)).split()

    assert await complete("kubectl-canary pro") == ["promote"]
    assert await complete("canaryctl completion ") == ["bash", "zsh", "fish"]
    assert await complete(f"kubectl-canary status --server {server} -n test ") == NAMES


@pytest.mark.asyncio
async def test_fish(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    fish = installed("fish")
    server = seeded(emulator)
    code = script("fish", capsys)

    async def complete(line: str) -> list[str]:
        out = await run(fish, "--no-config", "-c", f"source; complete --do-complete {line!r}", stdin=code)
        return [row.split("\t")[0] for row in out.splitlines()]

    assert await complete("kubectl-canary pro") == ["promote"]
    assert "--selector" in await complete("kubectl-canary list --")
    assert await complete(f"kubectl-canary promote --server {server} -n test ") == NAMES


@pytest.mark.asyncio
async def test_zsh(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    zsh = installed("zsh")
    server = seeded(emulator)
    code = script("zsh", capsys)
    line = f"kubectl-canary get --server {server} -n test "
    probe = (
        f"autoload -U compinit && compinit -u -D\n{code}\n"
        "print -r -- registered=${_comps[kubectl-canary]}\n"
        f"COMP_LINE={line!r} COMP_POINT={len(line)} _ARGCOMPLETE=1 _ARGCOMPLETE_SHELL=zsh "
        "__python_argcomplete_run kubectl-canary"
    )
    out = await run(zsh, "-f", "-c", probe)
    first, _, rest = out.partition("\n")
    assert first == "registered=_python_argcomplete"
    assert [entry.split(":")[0] for entry in rest.split("\v")] == NAMES
