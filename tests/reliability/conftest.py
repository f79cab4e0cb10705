"""Reliability tests: real parts (Envoy, Prometheus, HTTP servers) on loopback, bounded in time.

The mesh fixtures are the mesh suite's own, re-exported so these tests use the same real upstreams
and Envoy processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from canaryctl.api import lint
from canaryctl.api.models import CanaryAnalysis
from tests.mesh.conftest import ads_envoys, fresh_upstreams, local_mesh, upstreams

__all__ = ["ads_envoys", "fast_intervals", "fresh_upstreams", "local_mesh", "upstreams"]

# Analysis intervals of a second keep every rollout here within seconds (Flagger's floor is 10 s).
FAST_INTERVAL_SECONDS = 1.0


@pytest.fixture(scope="module")
def fast_intervals() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CanaryAnalysis, "min_interval_seconds", FAST_INTERVAL_SECONDS)
        patch.setattr(lint, "MIN_INTERVAL_SECONDS", FAST_INTERVAL_SECONDS)  # local runs lint first
        yield
