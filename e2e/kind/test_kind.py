"""The e2e scenarios on a real kind cluster: real Deployments, the included mesh's sidecars, the chart.

Each scenario gets its own namespace with the demo app (``canaryctl demo-app``, from the same image as
the controller) as a Deployment and a Flagger-style load tester driving traffic through a rollout hook;
a new pod template starts the rollout, and the Canary's phase is read through the Kubernetes API with
bounded waits. Every scenario also checks that its analysis measured data (e2e.kind.measured), so none
passes on a no-data timeout. Mesh scenarios run in namespaces labelled for sidecar injection; blue/green
runs with the ``kubernetes`` router and no mesh; one run installs the Gateway API CRDs and uses
``gatewayapi:v1``. Where Docker is missing the module is skipped with one reason (it runs in CI:
.github/workflows/kind.yml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from e2e.kind.cluster import APP_PORT, Cluster, unavailable
from e2e.kind.measured import unmeasured

if (reason := unavailable()) is not None:
    pytest.skip(reason, allow_module_level=True)

pytestmark = [pytest.mark.kind, pytest.mark.slow]

APP = "app"
INITIALIZED_TIMEOUT_SECONDS = 300.0
ROLLOUT_TIMEOUT_SECONDS = 600.0
SUCCESS = {"name": "request-success-rate", "interval": "30s", "thresholdRange": {"min": 95}}
INSIDER = "x-canary: insider"


def app_args(version: str, error_rate: float = 0.0) -> list[str]:
    serve = ["--host", "0.0.0.0", "--port", str(APP_PORT)]
    return ["demo-app", "--version", version, "--error-rate", f"{error_rate:g}", *serve]


def load(loadtester: str, url: str, header: str | None = None) -> dict[str, Any]:
    """A rollout hook: the load tester runs hey (no shell; the header is one quoted argument)."""
    flags = f"-H '{header}' " if header else ""
    return {
        "name": "load",
        "type": "rollout",
        "url": loadtester,
        "metadata": {"cmd": f"hey -z 1m -q 10 -c 2 {flags}{url}"},
    }


@dataclass(frozen=True)
class KindScenario:
    name: str
    provider: str
    analysis: dict[str, Any]
    target: str = APP  # the Service users call: the apex, or the canary's when no router splits traffic
    header: str | None = None
    error_rate: float = 0.0
    expected: str = "Succeeded"
    meshed: bool = True
    gateway_api: bool = False

    def canary(self, namespace: str, loadtester: str) -> dict[str, Any]:
        url = f"http://{self.target}.{namespace}:{APP_PORT}/"
        analysis = {"interval": "10s", "threshold": 2, "metrics": [SUCCESS], **self.analysis}
        analysis["webhooks"] = [load(loadtester, url, self.header)]
        return {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "Canary",
            "metadata": {"name": APP, "namespace": namespace},
            "spec": {
                "provider": self.provider,
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                "service": {"port": APP_PORT},
                "progressDeadlineSeconds": 300,
                "analysis": analysis,
            },
        }


SCENARIOS = [
    KindScenario("promotion", "canaryctl", {"stepWeight": 50}),
    KindScenario("rollback-5xx", "canaryctl", {"stepWeight": 50}, error_rate=0.5, expected="Failed"),
    KindScenario(
        "ab",
        "canaryctl",
        {"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]},
        header=INSIDER,
    ),
    KindScenario("mirror", "canaryctl", {"steps": [{"mirror": {"percentage": 50, "duration": "30s"}}]}),
    KindScenario(
        "fault",
        "canaryctl",
        {
            "steps": [
                {"setWeight": 50},
                {"fault": {"abort": {"httpStatus": 503, "percentage": 30}, "duration": "30s"}},
            ],
            "metrics": [{**SUCCESS, "thresholdRange": {"min": 50}}],
        },
    ),
    KindScenario("bluegreen", "kubernetes", {"iterations": 3}, target=f"{APP}-canary", meshed=False),
    KindScenario(
        "gateway-api",
        "gatewayapi:v1",
        {"stepWeight": 50, "maxWeight": 50},
        target=f"{APP}-canary",  # no Gateway API implementation runs here to shift the apex's traffic
        meshed=False,
        gateway_api=True,
    ),
]


def _primary_version(cluster: Cluster, namespace: str) -> str:
    deployment = cluster.apps.read_namespaced_deployment(f"{APP}-primary", namespace)
    pod_spec = deployment.spec.template.spec
    assert pod_spec is not None
    args = cast(list[str], pod_spec.containers[0].args)
    return args[args.index("--version") + 1]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario(cluster: Cluster, scenario: KindScenario) -> None:
    if scenario.gateway_api:
        cluster.install_gateway_api()
    namespace = cluster.namespace(f"e2e-{scenario.name}", scenario.meshed)
    cluster.deploy(namespace, APP, app_args("v1"), APP_PORT, scraped=not scenario.meshed)
    loadtester = cluster.deploy_loadtester(namespace)
    manifest = scenario.canary(namespace, loadtester)
    cluster.apply_canary(namespace, manifest)
    cluster.wait_phase(namespace, APP, {"Initialized"}, INITIALIZED_TIMEOUT_SECONDS)
    assert _primary_version(cluster, namespace) == "v1"

    cluster.set_args(namespace, APP, app_args("v2", scenario.error_rate))
    status = cluster.wait_phase(namespace, APP, {"Succeeded", "Failed"}, ROLLOUT_TIMEOUT_SECONDS)

    assert status["phase"] == scenario.expected, status
    assert unmeasured(manifest, status) == [], status  # decided on data, not on a no-data timeout
    promoted = scenario.expected == "Succeeded"
    assert _primary_version(cluster, namespace) == ("v2" if promoted else "v1")
    assert cluster.apps.read_namespaced_deployment(APP, namespace).spec.replicas == 0, "canary scaled down"
    if scenario.gateway_api:
        route = cast(
            dict[str, Any],
            cluster.custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", APP
            ),
        )
        weights = {ref["name"]: ref.get("weight") for ref in route["spec"]["rules"][-1]["backendRefs"]}
        assert weights == {f"{APP}-primary": 100, f"{APP}-canary": 0}, "all traffic back on the primary"
