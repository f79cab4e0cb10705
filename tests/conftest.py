"""Suite-wide settings."""

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# CI must not fail on an example nobody has seen before: there, property tests replay the same
# examples every run. Locally they keep exploring (and keep failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _root_logger_left_as_found() -> Iterator[None]:
    """A command run in-process (operator, meshd, load tester) sets up logging on the stream of that
    moment, which pytest closes after the test; later log records must not go to it."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler and h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)
