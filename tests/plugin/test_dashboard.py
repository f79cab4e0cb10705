"""``kubectl canary dashboard`` in a real browser (Debian's chromium through Playwright) against the
emulated API: the page renders the Canaries by namespace, follows a status change the operator writes
(through the watch), and a confirmed button press writes the command annotation. Also what keeps other
web pages from driving it: the Host check, the token on POSTs, and the security headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio

from canaryctl.api.control import CommandKind
from canaryctl.cli.apiserver import Connection
from canaryctl.cli.dashboard.server import TOKEN_HEADER, Dashboard, serving
from canaryctl.cli.kube import PluginObjects
from canaryctl.operator.adapters import OperatorObjects
from canaryctl_mesh.kube import api_client_for_host
from tests.kube.emulator import emulator_url
from tests.plugin import scenarios
from tests.plugin.test_control import command_of

pytestmark = pytest.mark.asyncio
TIMEOUT_MS = 15_000


@pytest_asyncio.fixture()
async def dashboard(emulator: kmock.KubernetesEmulator) -> AsyncIterator[Dashboard]:
    for make in (scenarios.progressing, scenarios.failed, scenarios.steps_fault):
        scenarios.seed(emulator, make())
    async with serving(PluginObjects(Connection(emulator_url(emulator))), None, 0) as running:
        yield running


async def wait_until(check: Any, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_page_renders_follows_the_watch_and_sends_a_verb(
    emulator: kmock.KubernetesEmulator, dashboard: Dashboard, browser: Any
) -> None:
    page = await browser.new_page()
    await page.goto(dashboard.url)
    card = page.locator('article[data-key="test/podinfo"]')
    await card.locator(".phase").filter(has_text="Progressing").wait_for(timeout=TIMEOUT_MS)
    assert await page.locator("section.namespace h2").all_text_contents() == ["namespace test"]
    assert sorted(await page.locator("article .name").all_text_contents()) == ["custom", "failing", "podinfo"]
    assert await card.locator(".weight-value").text_content() == "30% canary"
    assert await card.locator(".bar .fill").evaluate("node => node.style.width") == "30%"
    success = card.locator('tr[data-metric="request-success-rate"] td')
    assert await success.all_text_contents() == ["pass", "request-success-rate", "99.87", "min 99"]
    assert "6/10 analysis × 1" in await card.locator("dl").text_content()
    assert "rollout load-test" in await card.locator("table.webhooks").text_content()
    assert "Advance podinfo.test canary weight 30" in await card.locator(".events").text_content()
    custom = page.locator('article[data-key="test/custom"]')
    assert "fault" in await custom.locator("dl").text_content()
    assert "null" not in await custom.text_content(), "a Canary without webhook results shows no table"
    failing = page.locator('article[data-key="test/failing"]')
    assert await failing.locator('tr[data-metric="request-duration"] td').first.text_content() == "fail"

    # The operator promotes: the page follows the watch without a reload.
    operator = OperatorObjects(api_client_for_host(emulator_url(emulator)))
    done = {"phase": "Succeeded", "canaryWeight": 0, "message": "Promotion completed"}
    await operator.patch_status("Canary", "test", "podinfo", done)
    await card.locator(".phase").filter(has_text="Succeeded").wait_for(timeout=TIMEOUT_MS)
    assert await card.locator(".weight-value").text_content() == "0% canary"

    # A verb asks first and says what the operator will do; cancelled, nothing is written.
    await card.locator('button[data-verb="retry"]').click()
    dialog = page.locator("dialog#confirm")
    await dialog.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert await page.locator("#confirm-title").text_content() == "retry test/podinfo?"
    effect = await page.locator("#confirm-effect").text_content()
    assert (
        effect == "The operator will: nothing: the canary is Succeeded; retry only restarts a Failed rollout"
    )
    await page.locator("#confirm-cancel").click()
    await dialog.wait_for(state="hidden", timeout=TIMEOUT_MS)
    await asyncio.sleep(0.3)
    assert command_of(emulator, "podinfo") is None

    await failing.locator('button[data-verb="abort"]').click()
    await page.locator("#confirm-ok").click()
    await wait_until(lambda: command_of(emulator, "failing") is not None, "the command annotation")
    decoded = command_of(emulator, "failing")
    assert decoded is not None and decoded[0] is CommandKind.ABORT
    await (
        page.locator("#toast")
        .filter(has_text="abort requested for test/failing")
        .wait_for(timeout=TIMEOUT_MS)
    )


async def test_other_sites_cannot_drive_it(emulator: kmock.KubernetesEmulator, dashboard: Dashboard) -> None:
    verb = f"{dashboard.url}api/canaries/test/podinfo/abort"
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(dashboard.url)
        assert dashboard.token in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert (await client.post(verb)).status_code == 403
        forged = {TOKEN_HEADER: dashboard.token, "Origin": "http://evil.example"}
        assert (await client.post(verb, headers=forged)).status_code == 403
        rebound = await client.get(
            dashboard.url, headers={"Host": f"evil.example:{httpx.URL(dashboard.url).port}"}
        )
        assert rebound.status_code == 421
        assert command_of(emulator, "podinfo") is None
        allowed = await client.post(verb, headers={TOKEN_HEADER: dashboard.token})
        assert allowed.status_code == 200
        assert (
            allowed.json()["effect"]
            == "rollback: all traffic to the primary, the canary scaled to zero, phase Failed"
        )
    decoded = command_of(emulator, "podinfo")
    assert decoded is not None and decoded[0] is CommandKind.ABORT
