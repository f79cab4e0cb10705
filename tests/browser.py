"""A real browser for tests: Debian's chromium driven by Playwright (its own browser download is not used).

Use it from a conftest::

    from tests.browser import browser  # noqa: F401

Where no browser can start the test is skipped with one line saying why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container has no user namespaces for chromium's sandbox
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTH, HEIGHT = 1280, 900


def chromium_path() -> str | None:
    return (
        os.environ.get("CANARYCTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


@pytest_asyncio.fixture()
async def browser() -> AsyncIterator[object]:
    """A fresh browser context (its own user data dir); the test gets ``context.new_page()``."""
    try:
        from playwright.async_api import Error, async_playwright
    except ImportError:
        pytest.skip("no browser can start: the playwright package is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no browser can start: chromium is not installed (scripts/install-system-deps.sh)")
    with tempfile.TemporaryDirectory(prefix="canaryctl-chromium-") as profile:
        async with async_playwright() as playwright:
            try:
                context = await playwright.chromium.launch_persistent_context(
                    profile,
                    executable_path=executable,
                    headless=True,
                    args=CHROMIUM_FLAGS,
                    viewport={"width": WIDTH, "height": HEIGHT},
                )
            except Error as exc:
                pytest.skip(f"no browser can start: {str(exc).splitlines()[0]}")
            try:
                yield context
            finally:
                await context.close()
