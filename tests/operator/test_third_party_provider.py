"""A provider canaryctl does not ship: the example distribution under tests/plugins is built and
installed with pip, and the operator drives Canaries through its router and its metric provider, found
only through their entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import kmock
import pytest

from canaryctl import registry
from canaryctl.api.lint import lint_sources
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NS, Obj, canary, config_map, wait_phase, workload

pytestmark = pytest.mark.slow

DISTRIBUTION = Path(__file__).parents[1] / "plugins" / "example_provider"
ROUTER, METRICS = "example-configmap", "example-http"


@pytest.fixture(scope="module")
def installed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip builds and installs the distribution into its own directory (the test venv stays as it is),
    from a copy, so the build leaves nothing in the source tree."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / DISTRIBUTION.name
    shutil.copytree(DISTRIBUTION, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "canaryctl_example_provider").is_dir()
    return target


@pytest.fixture()
def example_installed(installed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(installed_dir))
    registry.rescan()
    yield
    monkeypatch.undo()
    registry.rescan()


class MetricServer:
    """The HTTP endpoint example-http asks: one scripted value, and every query it was asked."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/value":
                    outer.queries.append(parse_qs(url.query)["query"][0])
                body = json.dumps({"value": outer.value}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture()
def metric_server() -> Iterator[MetricServer]:
    server = MetricServer(99.0)
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def manifests(name: str, metrics_url: str) -> tuple[Obj, Obj]:
    template: Obj = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "success", "namespace": NS},
        "spec": {"provider": {"type": METRICS, "address": metrics_url}, "query": "success of {{ target }}"},
    }
    rollout = canary(name)
    rollout["spec"]["provider"] = ROUTER
    return template, rollout


def weights_history(emulator: kmock.KubernetesEmulator, apex: str) -> list[tuple[str, str]]:
    versions = emulator.objects["v1/configmaps", NS, f"{apex}-weights"].history
    data = [dict(v.get("data") or {}) for v in versions if v is not None]
    return [(d["primary"], d["canary"]) for d in data]


async def roll_out_a_new_revision(
    objects: KubeObjects, start_operator: StartOperator, name: str, metrics_url: str
) -> Obj:
    """A Deployment under a Canary of the example router and metric provider, then its v2: the Canary
    once the rollout ended."""
    template, rollout = manifests(name, metrics_url)
    await objects.apply(template)
    await objects.apply(config_map(f"{name}-config", "blue"))
    await objects.apply(workload("Deployment", name, config=f"{name}-config"))
    await objects.apply(rollout)
    await start_operator()
    await wait_phase(objects, name, "Initialized")
    await objects.apply(workload("Deployment", name, image="app:v2", config=f"{name}-config"))
    return await wait_phase(objects, name, "Succeeded", "Failed")


def test_not_installed_names_are_rejected_with_the_installed_ones() -> None:
    registry.rescan()
    template, rollout = manifests("web", "http://127.0.0.1:9")
    result = lint_sources([("rollout.yaml", json.dumps(rollout)), ("template.yaml", json.dumps(template))])
    messages = [e.message for e in result.errors]
    assert any(
        m.startswith(f"provider {ROUTER!r} is not supported by canaryctl; use one of") for m in messages
    )
    assert any(m.startswith(f"metric provider type {METRICS!r} is not supported") for m in messages)


@pytest.mark.asyncio
async def test_operator_rolls_out_through_a_third_party_router_and_metric_provider(
    example_installed: None,
    metric_server: MetricServer,
    objects: KubeObjects,
    kubelet: Kubelet,
    start_operator: StartOperator,
    emulator: kmock.KubernetesEmulator,
) -> None:
    assert ROUTER in registry.names(registry.ROUTERS) and METRICS in registry.names(registry.METRICS)
    done = await roll_out_a_new_revision(objects, start_operator, "web", metric_server.url)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    history = weights_history(emulator, "web")
    assert ("50", "50") in history and ("0", "100") in history and history[-1] == ("100", "0")
    assert metric_server.queries and set(metric_server.queries) == {"success of web"}
    assert not await objects.get("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "web")  # no mesh router


@pytest.mark.asyncio
async def test_a_bad_value_from_the_third_party_provider_rolls_back(
    example_installed: None,
    metric_server: MetricServer,
    objects: KubeObjects,
    kubelet: Kubelet,
    start_operator: StartOperator,
    emulator: kmock.KubernetesEmulator,
) -> None:
    metric_server.value = 42.0  # below thresholdRange.min 90
    done = await roll_out_a_new_revision(objects, start_operator, "bad", metric_server.url)
    assert done["status"]["phase"] == "Failed" and done["status"]["failedChecks"] == 2
    history = weights_history(emulator, "bad")
    assert ("50", "50") in history and history[-1] == ("100", "0")
