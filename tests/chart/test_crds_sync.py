"""The chart ships the generated CRDs byte for byte; `scripts/sync-chart-crds.sh` copies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.conftest import CHART, REPO

SYNC_HINT = "run `bash scripts/sync-chart-crds.sh` (after `make crds`) to copy them into the chart"
# Owned by the chart (kopf's peering CRDs), not generated from canaryctl/api.
CHART_ONLY = {"kopf-peering.yaml"}


def _yaml_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.yaml"))}


@pytest.mark.parametrize(
    ("source", "copy", "chart_only"),
    [
        (REPO / "crds", CHART / "crds", CHART_ONLY),
        (REPO / "crds" / "smi", CHART / "files" / "smi", set()),
    ],
    ids=["canaryctl", "smi"],
)
def test_chart_crds_are_identical_to_generated(source: Path, copy: Path, chart_only: set[str]) -> None:
    generated = _yaml_files(source)
    assert generated, f"no CRDs in {source}"
    shipped = _yaml_files(copy)
    missing = sorted(generated.keys() - shipped.keys())
    extra = sorted(shipped.keys() - generated.keys() - chart_only)
    differing = sorted(name for name in generated.keys() & shipped.keys() if generated[name] != shipped[name])
    assert not (missing or extra or differing), (
        f"{copy.relative_to(REPO)} is out of sync with {source.relative_to(REPO)}: missing {missing}, "
        f"extra {extra}, differing {differing}; {SYNC_HINT}"
    )
