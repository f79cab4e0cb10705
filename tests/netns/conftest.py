"""The namespace suite needs root, iproute2, iptables and setpriv; without them it skips with one reason."""

from __future__ import annotations

import pytest

from tests.netns import harness

UNAVAILABLE = harness.unavailable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason=UNAVAILABLE)
    for item in items:
        if "tests/netns/" in str(item.fspath):
            item.add_marker(skip)
