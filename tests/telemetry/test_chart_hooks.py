"""The chart's hooks run for real: the `helm test` Pod's check against a running controller (kopf's health
endpoint and the metrics server), and the post-delete Job's command releasing the finalizers kopf put on
Canaries, over the emulated API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import kmock
import pytest

from canaryctl.cli.main import main
from canaryctl.local.prometheus import free_port
from canaryctl.operator.handlers import FINALIZER
from canaryctl.telemetry.metrics import Compat, ControllerMetrics
from canaryctl_mesh.kube import KubeObjects
from tests.chart.conftest import NAMESPACE, RELEASE, render_values
from tests.chart.test_chart_commands import image_command
from tests.kube.cluster import running_kubelet
from tests.kube.emulator import emulator_url
from tests.operator.helpers import NS, canary, get_canary, setup_target, wait_for, wait_phase
from tests.telemetry.controller import running_controller

pytestmark = pytest.mark.asyncio


def rendered(kind: str, name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    documents = render_values(values or {})
    (found,) = [m for m in documents if (m["kind"], m["metadata"]["name"]) == (kind, name)]
    return found


def check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The hook container's command with this test's Python (the image's has canaryctl installed too)."""
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("compat", ["canaryctl", "flagger"])
async def test_helm_test_pod_checks_a_live_controller(
    emulator: kmock.KubernetesEmulator, compat: str
) -> None:
    pod = rendered("Pod", f"{RELEASE}-test-controller", {"controller": {"metricsCompat": compat}})
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HEALTH_URL"] == f"http://{RELEASE}.{NAMESPACE}:8081/healthz"
    health_port = free_port()
    liveness = f"http://127.0.0.1:{health_port}/healthz"
    async with running_controller(
        emulator, ControllerMetrics(Compat(compat)), liveness=liveness
    ) as controller:
        live = env | {"HEALTH_URL": liveness, "METRICS_URL": controller.metrics_url}
        passed = await asyncio.to_thread(check, container["command"], live)
        assert passed.returncode == 0, passed.stderr
        assert f"metrics served as {compat}_info" in passed.stdout
        wrong = live | {"INFO_METRIC": "flagger_info" if compat == "canaryctl" else "canaryctl_info"}
        misnamed = await asyncio.to_thread(check, container["command"], wrong)
        assert misnamed.returncode != 0 and "no " in misnamed.stderr
    dead = await asyncio.to_thread(check, container["command"], live)
    assert dead.returncode != 0 and "controller not reachable" in dead.stderr


@pytest.mark.slow
async def test_the_post_delete_job_releases_every_canary(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """kopf puts its finalizer on every Canary (its daemons need one). A real API server keeps a deleted
    Canary Terminating until the finalizer goes; after the controller is uninstalled nothing removes it,
    unless the Job does. (The emulator deletes regardless, so the finalizers themselves are checked.)"""
    from canaryctl.api.models import CanaryAnalysis

    monkeypatch.setattr(CanaryAnalysis, "min_interval_seconds", 0.3)
    job = rendered("Job", f"{RELEASE}-release-finalizers")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    async with running_kubelet(emulator), running_controller(emulator, ControllerMetrics()):
        for name in ("web", "api"):
            await setup_target(objects, "Deployment", name)
            await objects.apply(canary(name, interval="300ms"))
            await wait_phase(objects, name, "Initialized", timeout=60)
    for name in ("web", "api"):
        assert FINALIZER in (await get_canary(objects, name))["metadata"]["finalizers"]

    # What the controller image runs (`canaryctl operator ARGS`), without the `canaryctl`.
    args = [*image_command("controller", container["args"])[1:], "--server", emulator_url(emulator)]
    code = await asyncio.to_thread(main, args)
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 Canaries released"
    for name in ("web", "api"):
        assert FINALIZER not in ((await get_canary(objects, name))["metadata"].get("finalizers") or [])

    async def nothing_left() -> bool:
        return await asyncio.to_thread(main, args) == 0

    await wait_for(nothing_left, timeout=10, what="a second sweep")
    assert capsys.readouterr().out.splitlines()[-1] == "0 Canaries released"
    assert NS == "test"
