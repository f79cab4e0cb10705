"""``status`` and ``list`` against rollouts seeded into the emulator: golden outputs (plain mode, as in
a pipe or CI log), machine-readable output, and errors."""

from __future__ import annotations

import json
from typing import Any

import kmock
import pytest
import yaml

from canaryctl.api.models import KNATIVE_PRIMARY_REVISION, Canary
from canaryctl.engine.types import RouteState
from canaryctl_mesh.kinds import resource_path
from canaryctl_mesh.kube import KubeObjects
from canaryctl_providers.routers import ROUTERS
from tests.plugin import scenarios
from tests.plugin.helpers import check_golden, kubectl_canary
from tests.providers.routers.cases import user_apisix_route, user_ingress

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
async def test_status_golden(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str], scenario: str
) -> None:
    scenarios.seed(emulator, scenarios.SCENARIOS[scenario]())
    assert await kubectl_canary(emulator, "status", scenarios.CANARY_NAMES[scenario], "-n", "test") == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "✔" not in out  # plain mode when stdout is not a terminal
    check_golden(f"status-{scenario}", out)


async def test_list_golden(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    for make in scenarios.SCENARIOS.values():
        scenarios.seed(emulator, make())
    assert await kubectl_canary(emulator, "list", "-A") == 0
    check_golden("list", capsys.readouterr().out)


async def test_list_is_per_namespace(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await kubectl_canary(emulator, "list", "-n", "default") == 0
    assert capsys.readouterr() == ("", "No canaries found in namespace default.\n")
    assert await kubectl_canary(emulator, "list", "-n", "test", "-o", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)["items"]
    assert row | {"age": None} == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "canaryWeight": 30,
        "mirrorWeight": 0,
        "step": 6,
        "totalSteps": 10,
        "failedChecks": 1,
        "threshold": 5,
        "provider": None,
        "strategy": "canary",
        "message": "Check 0/1 passed",
        "lastTransitionTime": scenarios.ago(400),
        "age": None,
    }


@pytest.mark.parametrize("output", ["json", "yaml"])
async def test_status_data(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await kubectl_canary(emulator, "status", "podinfo", "-n", "test", "-o", output) == 0
    text = capsys.readouterr().out
    data = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert data["canary"]["status"]["canaryWeight"] == 30
    assert data["observed"] == {"weight": 30, "source": "TrafficSplit podinfo"}
    assert [w["name"] for w in data["workloads"]] == ["podinfo-primary", "podinfo"]
    assert len(data["workloads"][0]["pods"]) == 2
    assert data["events"][-1]["message"] == "Advance podinfo.test canary weight 30"
    assert data["revision_pending"] is False


async def test_router_lagging_behind_status_is_shown(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    objs = scenarios.progressing()
    scenarios.seed(emulator, [*objs, scenarios.traffic_split("podinfo", 20)])
    assert await kubectl_canary(emulator, "status", "podinfo", "-n", "test") == 0
    assert "30% canary (router: 20% in TrafficSplit podinfo, updating)" in capsys.readouterr().out


async def test_new_revision_not_yet_picked_up(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    objs = scenarios.succeeded()
    scenarios.seed(emulator, [*objs, scenarios.deployment("done", "done", "6.1.0", 1, 1)])
    assert await kubectl_canary(emulator, "status", "done", "-n", "test") == 0
    assert "Revision:      new revision detected, waiting for the operator" in capsys.readouterr().out


async def test_not_found_names_the_object(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await kubectl_canary(emulator, "status", "nope", "-n", "test") == 1
    assert capsys.readouterr().err == "kubectl canary: error: canary test/nope: not found\n"


async def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    from canaryctl.cli.main import build_parser

    args = build_parser("kubectl canary").parse_args(["status", "x", "--server", "http://127.0.0.1:9"])
    assert await args.afunc(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl canary: error: canary default/x: cannot reach the API server")


KNATIVE_API = "serving.knative.dev/v1"


def router_setup(provider: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """What the router needs in the spec (set in ``manifest``) and in the cluster (returned) before it
    writes: the user's Ingress or ApisixRoute it copies, the Knative Service it routes."""
    spec = manifest["spec"]
    if provider == "appmesh":
        spec["service"]["meshName"] = "global"
    if provider in ("nginx", "skipper"):
        spec["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}
        return [user_ingress()]
    if provider == "apisix":
        spec["routeRef"] = {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "web"}
        return [user_apisix_route()]
    if provider == "knative":
        spec["targetRef"] = {"apiVersion": KNATIVE_API, "kind": "Service", "name": "podinfo"}
        del spec["service"]
        meta = {
            "name": "podinfo",
            "namespace": "test",
            "annotations": {KNATIVE_PRIMARY_REVISION: "podinfo-00001"},
        }
        return [{"apiVersion": KNATIVE_API, "kind": "Service", "metadata": meta, "spec": {}}]
    return []


@pytest.mark.parametrize(
    "provider",
    [
        "canaryctl",
        "smi",
        "smi:v1alpha2",
        "linkerd",
        "istio",
        "gatewayapi:v1beta1",
        "kuma",
        "osm",
        "appmesh",
        "appmesh:v1beta2",
        "knative",
        "nginx",
        "skipper",
        "contour",
        "gloo",
        "traefik",
        "apisix",
    ],
)
@pytest.mark.parametrize("weight", [30, 0])
async def test_observed_weight_is_read_from_what_each_router_writes(
    emulator: kmock.KubernetesEmulator,
    objects: KubeObjects,
    capsys: pytest.CaptureFixture[str],
    provider: str,
    weight: int,
) -> None:
    """The plugin reads the very objects the routers generate (SMI v1alpha1 weights are Quantities;
    a zero weight may be written as a missing one, or a switched-off canary Ingress)."""
    objs = scenarios.progressing()
    objs[0]["spec"]["provider"] = provider
    for obj in router_setup(provider, objs[0]):
        emulator.objects[resource_of(obj), "test", obj["metadata"]["name"]] = obj
    canary = Canary.model_validate(objs[0])
    for side in ("primary", "canary"):  # App Mesh's virtual nodes select the side Services' pods
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"podinfo-{side}"}}
        service["spec"] = {"selector": {"app": f"podinfo-{side}"}}
        emulator.objects["v1/services", "test", f"podinfo-{side}"] = service
    written = await ROUTERS[provider](objects).desired(canary, RouteState(canary_weight=weight))
    router_obj = next(o for o in written if (o["apiVersion"], o["kind"]) in WEIGHTS_IN)  # the apex's first
    emulator.objects[resource_of(router_obj), "test", router_obj["metadata"]["name"]] = router_obj
    scenarios.seed(emulator, objs[:1])
    assert await kubectl_canary(emulator, "status", "podinfo", "-n", "test", "-o", "json") == 0
    observed = json.loads(capsys.readouterr().out)["observed"]
    assert observed == {"weight": weight, "source": f"{router_obj['kind']} {router_obj['metadata']['name']}"}


# The objects holding the weights, among those a router writes (App Mesh v1beta1's VirtualService holds
# its routes; v1beta2's names its VirtualRouter).
WEIGHTS_IN = {
    *((f"split.smi-spec.io/{v}", "TrafficSplit") for v in ("v1alpha1", "v1alpha2", "v1alpha4")),
    ("networking.istio.io/v1beta1", "VirtualService"),
    ("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
    ("policy.linkerd.io/v1beta3", "HTTPRoute"),
    ("kuma.io/v1alpha1", "MeshHTTPRoute"),
    ("appmesh.k8s.aws/v1beta2", "VirtualRouter"),
    ("appmesh.k8s.aws/v1beta1", "VirtualService"),
    (KNATIVE_API, "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("apisix.apache.org/v2", "ApisixRoute"),
    ("projectcontour.io/v1", "HTTPProxy"),
    ("gateway.solo.io/v1", "RouteTable"),
    ("traefik.io/v1alpha1", "TraefikService"),
}


def resource_of(obj: dict[str, Any]) -> str:
    return f"{obj['apiVersion']}/{resource_path(obj['apiVersion'], obj['kind'], None).rpartition('/')[2]}"


async def test_service_target_has_no_workloads(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    objs = scenarios.progressing()
    objs[0]["spec"]["targetRef"] = {"apiVersion": "v1", "kind": "Service", "name": "podinfo"}
    scenarios.seed(emulator, objs[:1])
    assert await kubectl_canary(emulator, "status", "podinfo", "-n", "test") == 0
    out = capsys.readouterr().out
    assert "Canary podinfo\n`-- Service podinfo (traffic only, no pods)\n" in out
    assert "Images" not in out
