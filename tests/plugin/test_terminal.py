"""``status``, ``list`` and ``status --watch`` on a real (pseudo-)terminal: colors and symbols there,
``NO_COLOR`` keeps the symbols without colors, ``TERM=dumb`` gets the ASCII a log gets, tables follow the
terminal's width, and ``--watch`` redraws in place."""

from __future__ import annotations

import asyncio
import re

import kmock
import pytest

from tests.plugin import scenarios
from tests.plugin.helpers import kubectl_canary
from tests.plugin.terminal import terminal

pytestmark = pytest.mark.asyncio

COLOR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|9[0-7]|38;5;\d+)[0-9;]*m")
ESCAPE = re.compile(r"\x1b\[")


async def status_on_terminal(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch, columns: int = 120, **environ: str
) -> str:
    scenarios.seed(emulator, scenarios.failed())
    with terminal(monkeypatch, columns, **environ) as captured:
        assert await kubectl_canary(emulator, "status", "failing", "-n", "test") == 0
    return captured.text


async def test_a_terminal_gets_colors_symbols_and_box_drawing(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await status_on_terminal(emulator, monkeypatch)
    assert COLOR.search(out)
    plain = ESCAPE.sub("", re.sub(r"\x1b\[[0-9;]*m", "", out))
    assert "✖ Failed" in plain
    assert "✖  request-duration" in plain and "✔  request-success-rate" in plain
    assert "├── Deployment failing-primary" in plain and "└── " in plain
    assert "[····················] 0% canary" in plain


async def test_no_color_keeps_the_symbols_without_colors(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await status_on_terminal(emulator, monkeypatch, NO_COLOR="1")
    assert not COLOR.search(out)
    assert "✖  request-duration" in out and "└── " in out


async def test_a_dumb_terminal_gets_plain_ascii(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await status_on_terminal(emulator, monkeypatch, TERM="dumb")
    assert out.isascii() and not ESCAPE.search(out)
    assert "FAIL  request-duration" in out and "`-- Deployment failing (canary)" in out


async def test_no_color_flag_is_plain_ascii_on_a_terminal(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios.seed(emulator, scenarios.failed())
    with terminal(monkeypatch) as captured:
        assert await kubectl_canary(emulator, "status", "failing", "-n", "test", "--no-color") == 0
    assert captured.text.isascii() and not ESCAPE.search(captured.text)


@pytest.mark.parametrize("columns", [60, 100])
async def test_output_fits_the_terminal_width(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    out = await status_on_terminal(emulator, monkeypatch, columns=columns, TERM="dumb")
    lines = out.replace("\r", "").split("\n")
    assert max(len(line) for line in lines) <= columns
    weight = "Weight:        [....................] 0% canary (router: 0% in TrafficSplit failing)"
    assert (weight in lines) is (columns >= len(weight))


async def test_columns_overrides_the_terminal_width(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await status_on_terminal(emulator, monkeypatch, columns=200, TERM="dumb", COLUMNS="64")
    assert max(len(line) for line in out.split("\n")) <= 64


async def test_list_is_a_table_on_a_terminal(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios.seed(emulator, scenarios.failed() + scenarios.progressing())
    with terminal(monkeypatch, NO_COLOR="1") as captured:
        assert await kubectl_canary(emulator, "list", "-n", "test") == 0
    lines = captured.text.split("\n")
    assert lines[0].split() == [
        "NAME",
        "NAMESPACE",
        "PHASE",
        "WEIGHT",
        "STEP",
        "FAILED",
        "LAST",
        "TRANSITION",
    ]
    assert lines[1].split()[:3] == ["failing", "test", "Failed"]


async def test_watch_redraws_in_place_on_a_terminal(
    emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios.seed(emulator, scenarios.progressing())

    async def operator() -> None:
        await asyncio.sleep(0.3)
        current = scenarios.stored(emulator, "Canary", "podinfo")
        done = {"phase": "Succeeded", "message": "Promotion completed"}
        scenarios.seed(emulator, [current | {"status": current["status"] | done}])

    with terminal(monkeypatch) as captured:
        flip = asyncio.create_task(operator())
        argv = ("status", "podinfo", "-n", "test", "--watch", "--poll-interval", "0.05", "--timeout", "20s")
        code = await kubectl_canary(emulator, *argv)
        await flip
    assert code == 0
    out = captured.text
    assert "\x1b[2K" in out or "\x1b[1A" in out, "the block is redrawn, not printed again below"
    assert out.count("Canary podinfo") >= 2  # drawn, then redrawn over itself
    assert "✔ Succeeded" in re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "12:00:00 podinfo" not in out, "no log lines on a terminal"
