"""Run ``kubectl canary`` sub-commands in the test's event loop, against the emulator."""

from __future__ import annotations

import os
from pathlib import Path

import kmock

from canaryctl.cli.main import build_parser
from tests.kube.emulator import emulator_url
from tests.plugin.scenarios import NOW

GOLDEN = Path(__file__).parent / "golden"


async def kubectl_canary(emulator: kmock.KubernetesEmulator, *argv: str) -> int:
    """Parse like the real CLI, then await the command (``asyncio.run`` would need a second loop)."""
    clock = ["--now", NOW] if argv[0] in ("status", "get", "list") else []
    args = build_parser("kubectl canary").parse_args([*argv, "--server", emulator_url(emulator), *clock])
    code: int = await args.afunc(args)
    return code


def check_golden(name: str, text: str) -> None:
    """Compare with golden/<name>.txt; UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"output differs from {path} (UPDATE_GOLDEN=1 to accept)"
