"""`helm upgrade` never upgrades the chart's `crds/`: docs/deploy.md's "Upgrading CRDs" command, run as
written with the real kubectl against the emulated API server holding the CRDs of an older chart.

kmock merges the apply patch into the stored object; it does not model server-side apply's field
ownership, so what is checked here is that the documented command reaches the API server as a forced
server-side apply of exactly the chart's CRDs (the content of each file), and that the stored CRDs
then carry the new schema. The conflicts `--force-conflicts` overrides are the real API server's.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from canaryctl_mesh.kube import KubeObjects
from tests.chart.conftest import CHART, REPO
from tests.kube.emulator import emulator, emulator_url, kube_api, objects  # noqa: F401

pytestmark = pytest.mark.asyncio

KUBECTL = REPO / ".tools" / "bin" / "kubectl"
CRD_API = "apiextensions.k8s.io/v1"


def documented_command() -> list[str]:
    """The kubectl line of the code block under "### Upgrading CRDs" in docs/deploy.md."""
    page = (REPO / "docs" / "deploy.md").read_text()
    section = page.split("### Upgrading CRDs", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    (line,) = [line for line in block[1].splitlines() if line.startswith("kubectl ")]
    return shlex.split(line)


def chart_crds() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in [d for d in yaml.safe_load_all(path.read_text()) if d]:
            assert crd["apiVersion"] == CRD_API and crd["kind"] == "CustomResourceDefinition", path
            found[crd["metadata"]["name"]] = crd
    return found


def older(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as an older chart shipped it: its first version's schema without its last property."""
    previous = copy.deepcopy(crd)
    properties = previous["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    properties.pop(sorted(properties)[-1])
    assert previous != crd
    return previous


async def test_the_documented_crd_upgrade_applies_every_chart_crd_with_force(
    emulator: kmock.KubernetesEmulator,  # noqa: F811
    objects: KubeObjects,  # noqa: F811
) -> None:
    if not KUBECTL.exists():
        pytest.skip("no kubectl at .tools/bin (scripts/install-test-tools.sh unpacks it)")
    command = documented_command()
    assert command[:2] == ["kubectl", "apply"] and {"--server-side", "--force-conflicts"} <= set(command)
    directory = Path(command[command.index("-f") + 1])
    assert (REPO / directory).resolve() == (CHART / "crds").resolve()
    crds = chart_crds()
    for crd in crds.values():
        await objects.create(older(crd))  # what `helm install` of the older chart created
    patches: list[Any] = []
    handle = emulator._handle

    async def recording(request: Any) -> Any:
        method = str(getattr(request.method, "value", request.method)).upper()
        if (
            method == "PATCH"
            and request.resource is not None
            and request.resource.plural == "customresourcedefinitions"
        ):
            patches.append(request)
        return await handle(request)

    emulator._handle = recording  # type: ignore[method-assign]
    # The emulator serves no OpenAPI document, which kubectl's client-side validation downloads.
    argv = [str(KUBECTL), *command[1:], "--server", emulator_url(emulator), "--validate=false"]
    argv[argv.index("-f") + 1] = str(REPO / directory)
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in patches} == set(crds)
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/apply-patch+yaml"
        assert patch.params.get("force") == "true" and patch.params.get("fieldManager") == "kubectl"
        assert yaml.safe_load(patch.body) == crds[patch.name]
    for name, crd in crds.items():
        stored = await objects.get(CRD_API, "CustomResourceDefinition", "", name)
        assert stored is not None and stored["spec"]["versions"] == crd["spec"]["versions"], name
