"""The faulty demo end to end (real apps, Envoy, Prometheus, load tester, Slack receiver): fastFail
rolls v2 back, the report shows the error-rate series that triggered it, opened in a real browser, and
the demo says nothing about the load generators it stops."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from canaryctl.api.models import Phase
from canaryctl.demo.run import run_scenario
from canaryctl.demo.scenarios import SCENARIOS

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_faulty_demo_report_shows_what_fastfail_judged(
    tmp_path: Path, browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outcome = await run_scenario(SCENARIOS["faulty"], tmp_path)
    assert outcome.phase is Phase.FAILED

    text = outcome.report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text), "plotly.js is inlined"

    page = await browser.new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    await page.goto(outcome.report.as_uri())
    await page.wait_for_selector("#chart-1 .main-svg")
    assert [url for url in fetched if not url.startswith("file:")] == [], (
        "the page loads nothing from the net"
    )
    assert (await page.text_content("#verdict h1")).startswith("Rolled back")
    reason = await page.text_content("#reason")
    assert reason.startswith("fastFail: canary error rate")
    judged = float(re.search(r"rate ([0-9.]+)%", reason).group(1))  # type: ignore[union-attr]

    errors = await page.evaluate(
        "() => Object.fromEntries(document.getElementById('chart-1').data.map(t => [t.name, t.y]))"
    )
    canary = [v for v in errors["canary 5xx %"] if v is not None]
    primary = [v for v in errors["primary 5xx %"] if v is not None]
    assert canary and max(canary) > 10, "the canary's error rate above the fastFail limit is plotted"
    assert max(canary) >= judged * 0.5, (canary, judged)
    assert primary and max(primary) < 5, "v1 answers without errors"
    shapes = await page.evaluate(
        "() => document.getElementById('chart-1').layout.shapes.map(s => [s.y0, s.y1])"
    )
    assert [10, 10] in shapes, "the fastFail limit is drawn"
    title = await page.evaluate("() => document.getElementById('chart-1').layout.title.text")
    assert title == "Error rate (5xx) by version over 5s (the fastFail period)"

    stopped = [
        r
        for r in caplog.records
        if r.name.startswith("canaryctl.loadtester") and r.levelno >= logging.WARNING
    ]
    assert stopped == [], [r.getMessage() for r in stopped]
