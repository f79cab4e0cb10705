"""The kind cluster for the e2e suite: created once per session by pytest-kind, canaryctl installed.

Nothing here runs unless a test of this directory runs, and test_kind.py skips the whole module
before that when Docker is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from pytest_kind import KindCluster

from e2e.kind.cluster import Cluster, tool

CLUSTER_NAME = "canaryctl-e2e"


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    kind = KindCluster(CLUSTER_NAME, kind_path=tool("kind"), kubectl_path=tool("kubectl"))
    try:
        kind.create()
    except requests.RequestException as exc:
        pytest.skip(f"kind e2e: the kind binary could not be downloaded: {exc}")
    try:
        installed = Cluster(kind)
        installed.install()
        yield installed
    finally:
        if not request.config.getoption("keep_cluster"):
            kind.delete()
