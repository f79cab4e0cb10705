"""Terminal output on rich, shared by ``kubectl canary`` and ``canaryctl local``/``demo``.

One decision per output stream: a real terminal gets colors, symbols (✔ ✖ █) and box-drawing trees;
anything else (a pipe, a CI log, ``TERM=dumb``, ``--no-color``) gets plain ASCII: ``ok``/``FAIL``,
``#`` bars, ``+--`` trees, and no escape codes. ``NO_COLOR`` turns colors off and keeps the symbols, as
no-color.org asks. The width is the terminal's (or ``COLUMNS``); logs are not wrapped at 80.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from canaryctl.api.models import Phase, Verdict

LOG_WIDTH = 240  # wide enough that a log line is never wrapped in the middle of a message
BAR_WIDTH = 20
DUMB_TERMINALS = ("dumb", "unknown")
# What ASCII output writes instead of the symbols canaryctl itself puts into text (step names, events).
ASCII = str.maketrans({"×": "x", "→": "->", "…": "...", "✔": "ok", "✖": "FAIL", "✉": "mail"})

PHASE_STYLES = {
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.PROGRESSING: "cyan",
    Phase.PROMOTING: "cyan",
    Phase.FINALISING: "cyan",
    Phase.WAITING: "yellow",
    Phase.WAITING_PROMOTION: "yellow",
}
PHASE_ICONS = {
    Phase.SUCCEEDED: "✔",
    Phase.FAILED: "✖",
    Phase.PROGRESSING: "◐",
    Phase.WAITING: "⏸",
    Phase.WAITING_PROMOTION: "⏸",
    Phase.PROMOTING: "▲",
    Phase.FINALISING: "▲",
}
# (symbol, ASCII word, style)
VERDICT_MARKS = {
    Verdict.PASS: ("✔", "ok", "green"),
    Verdict.FAIL: ("✖", "FAIL", "red"),
    Verdict.NO_DATA: ("?", "NODATA", "yellow"),
    Verdict.ERROR: ("⚠", "ERROR", "red"),
    Verdict.INCONCLUSIVE: ("?", "INCONCLUSIVE", "yellow"),
}
PENDING_MARK = ("·", "-", "dim")


class _AsciiStream(io.StringIO):
    """A buffer rich sees as ASCII-only, so its trees and tables use ASCII guides and borders."""

    encoding = "ascii"


@dataclass(frozen=True)
class Look:
    """How text is decorated: symbols and box drawing on a terminal, ASCII words elsewhere."""

    unicode: bool

    def mark(self, mark: tuple[str, str, str]) -> Text:
        symbol, word, style = mark
        return Text(symbol if self.unicode else word, style=style)

    def verdict(self, verdict: Verdict) -> Text:
        return self.mark(VERDICT_MARKS[verdict])

    def passed(self, ok: bool) -> Text:
        return self.verdict(Verdict.PASS if ok else Verdict.FAIL)

    def bar(self, weight: int) -> Text:
        filled = round(weight * BAR_WIDTH / 100)
        full, empty = ("█", "·") if self.unicode else ("#", ".")
        return Text.assemble("[", (full * filled, "cyan"), (empty * (BAR_WIDTH - filled), "dim"), "]")

    def phase(self, phase: Phase | None) -> Text:
        name = phase.value if phase else "Pending"
        style = PHASE_STYLES.get(phase) if phase else None
        if not self.unicode:
            return Text(name, style=style or "")
        icon = PHASE_ICONS.get(phase, "·") if phase else "·"
        return Text(f"{icon} {name}", style=style or "")


def _is_terminal(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM", "") not in DUMB_TERMINALS


def _width(stream: TextIO) -> int:
    """``COLUMNS``, else the terminal's own width (also for ``TERM=dumb``), else wide enough for logs."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if stream.isatty():
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except OSError:
            pass
    return LOG_WIDTH


class Screen:
    """Writes rich renderables to one stream with the look that stream calls for."""

    def __init__(self, stream: TextIO | None = None, no_color: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.terminal = _is_terminal(self.stream)
        self.look = Look(unicode=self.terminal and not no_color)
        self.console = self._console(self.stream if self.look.unicode else _AsciiStream(), no_color)

    def _console(self, file: TextIO, no_color: bool) -> Console:
        return Console(
            file=file,
            width=_width(self.stream),
            force_terminal=self.terminal if self.look.unicode else False,
            no_color=True if no_color else None,  # None: rich reads NO_COLOR itself
            highlight=False,
            emoji=False,
            markup=False,
        )

    def text(self, renderable: RenderableType, soft_wrap: bool = False) -> str:
        """The renderable as this screen would print it, without the final newline; ``soft_wrap``
        keeps long lines whole (log lines), else they wrap at the width."""
        with self.console.capture() as captured:
            self.console.print(renderable, soft_wrap=soft_wrap)
        text = captured.get().rstrip("\n")
        lines = "\n".join(line.rstrip() for line in text.split("\n"))
        return lines if self.look.unicode else lines.translate(ASCII)

    def print(self, renderable: RenderableType, soft_wrap: bool = False) -> None:
        self.stream.write(self.text(renderable, soft_wrap) + "\n")
        self.stream.flush()

    @contextmanager
    def live(self) -> Iterator[Live | None]:
        """A region redrawn in place on a terminal; None elsewhere (print a line per change instead)."""
        if not self.look.unicode:
            yield None
            return
        with Live(console=self.console, auto_refresh=False, transient=False) as live:
            yield live
