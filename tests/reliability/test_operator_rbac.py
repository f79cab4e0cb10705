"""The chart's controller RBAC against the API calls the operator makes.

One operator (with kopf peering, as the chart runs it) drives a rollout per router and per target
kind (a Knative Service too, its revisions made as Knative Serving would) to promotion, plus an HPA-
and a KEDA-scaled target and a Canary deleted with
``revertOnDeletion``, against kmock's emulator. Every request it sends is recorded as (apiGroup,
resource, verb). The test renders the chart with a real helm and fails on any rule it grants that no
call used (least privilege) and on any call no rule grants (it would be refused on a real cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import pytest_asyncio
import yaml
from kubernetes import client

from canaryctl.api.models import API_VERSION
from canaryctl_mesh.kube import KubeObjects, resource_path
from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    helm,  # noqa: F401
    run_helm,
)
from tests.kube.cluster import Kubelet
from tests.kube.emulator import kube_api, objects, running_emulator  # noqa: F401
from tests.operator.conftest import (  # noqa: F401
    StartOperator,
    kubelet,
    prometheus,
    short_intervals,
    start_operator,
)
from tests.operator.helpers import (
    METRIC_TEMPLATE,
    NS,
    autoscaled,
    canary,
    setup_target,
    wait_for,
    wait_phase,
    workload,
)

pytestmark = pytest.mark.asyncio

Call = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
TESTS_USER_AGENT = "canaryctl-tests"
ROUTER_CANARIES: dict[str, dict[str, Any]] = {
    "canaryctl": {},
    "smi:v1alpha1": {},
    "smi:v1alpha2": {},
    "smi:v1alpha3": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
    "smi:v1alpha4": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
    "linkerd": {},
    "istio": {},
    "gatewayapi:v1": {},
    "gatewayapi:v1beta1": {"iterations": 2, "mirror": True, "mirrorWeight": 30},
    "kubernetes": {"iterations": 2},
    "kuma": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
    "osm": {},
    "appmesh:v1beta2": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
    "appmesh": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
    "nginx": {},
    "contour": {},
    "gloo": {},
    "skipper": {},
    "traefik": {},
    "apisix": {},
}
# Routers that copy a user's Ingress (spec.ingressRef).
INGRESS_COPIERS = ("nginx", "skipper")
# Granted although no request shows it: an API server checks it on the operator's behalf.
IMPLIED: dict[Call, str] = {
    ("canaryctl.dev", "canaries/finalizers", "update"): (
        "owner references with blockOwnerDeletion on the objects a Canary owns need it "
        "(OwnerReferencesPermissionEnforcement)"
    ),
}


class RecordingEmulator:
    """Wraps the emulator's request handler to record every call not sent by the test itself."""

    def __init__(self, emulator: kmock.KubernetesEmulator) -> None:
        self.calls: set[Call] = set()
        handle = emulator._handle

        async def recording(request: Any) -> Any:
            resource = request.resource  # None for discovery, which every authenticated client may read
            if (
                resource is not None
                and resource.plural
                and request.headers.get("User-Agent") != TESTS_USER_AGENT
            ):
                self.calls.add(self.call(request))
            return await handle(request)

        emulator._handle = recording  # type: ignore[method-assign]

    @staticmethod
    def call(request: Any) -> Call:
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        method = request.method.value if hasattr(request.method, "value") else str(request.method)
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method.upper())
        if verb is None:
            params = request.params or {}
            watching = str(params.get("watch", "")).lower() in ("1", "true")
            verb = "watch" if watching else ("get" if request.name else "list")
        return (request.resource.group or "", resource, verb)


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with running_emulator(keep_requests=False) as running:
        yield running


def granted(helm: str, scope: str) -> set[Call]:  # noqa: F811
    """Every (apiGroup, resource, verb) the rendered chart grants the controller's service account:
    its ClusterRole, and with ``rbac.scope=namespace`` its Role in the watched namespace too."""
    options = [
        "--set",
        "controller.prometheusUrl=http://prometheus:9090",  # required
        *(
            ["--set", "rbac.scope=namespace", "--set", f"watchNamespaces={{{NS}}}"]
            if scope == "namespace"
            else []
        ),
    ]
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *options)
    assert result.returncode == 0, result.stderr
    roles = [
        doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc
        and doc["kind"] in ("ClusterRole", "Role")
        and doc["metadata"]["name"] == f"{RELEASE}-controller"
        and doc["metadata"].get("namespace") in (None, NS)
    ]
    assert len(roles) == (2 if scope == "namespace" else 1)
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def ingress(name: str) -> dict[str, Any]:
    """The user's Ingress routing / to the apex Service ``name``."""
    backend = {"service": {"name": name, "port": {"number": 80}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"rules": [{"host": f"{name}.example.com", "http": {"paths": [path]}}]},
    }


APISIX_API = "apisix.apache.org/v2"


def apisix_route(name: str) -> dict[str, Any]:
    """The user's ApisixRoute routing /* to the apex Service ``name``."""
    route = {
        "name": "app",
        "match": {"paths": ["/*"]},
        "backends": [{"serviceName": name, "servicePort": 80}],
    }
    return {
        "apiVersion": APISIX_API,
        "kind": "ApisixRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"http": [route]},
    }


KNATIVE_API = "serving.knative.dev/v1"


def knative_revision(name: str) -> dict[str, Any]:
    """A Knative Revision as Knative Serving reports it once ready."""
    return {
        "apiVersion": KNATIVE_API,
        "kind": "Revision",
        "metadata": {"name": name, "namespace": NS},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


async def new_knative_revision(objects: KubeObjects, name: str, revision: str) -> None:  # noqa: F811
    """What Knative Serving does for a Service's new template: a Revision, named in its status."""
    await objects.apply(knative_revision(revision))
    container = {"image": f"app:{revision}"}
    service = {
        "apiVersion": KNATIVE_API,
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {"spec": {"containers": [container]}}},
        "status": {"latestCreatedRevisionName": revision},
    }
    await objects.apply(service)


async def drive_every_router_to_promotion(objects: KubeObjects) -> None:  # noqa: F811
    names = []
    await objects.apply(METRIC_TEMPLATE)
    await new_knative_revision(objects, "kn", "kn-00001")
    knative = canary("kn", "Service")
    knative["spec"]["targetRef"]["apiVersion"] = KNATIVE_API
    knative["spec"]["provider"] = "knative"
    del knative["spec"]["service"]
    await objects.apply(knative)
    for index, (provider, analysis) in enumerate(ROUTER_CANARIES.items()):
        name = f"r{index}"
        await setup_target(objects, "Deployment", name)
        manifest = canary(name, **analysis)
        manifest["spec"]["provider"] = provider
        if provider in INGRESS_COPIERS:
            await objects.apply(ingress(name))
            manifest["spec"]["ingressRef"] = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "name": name,
            }
        if provider == "appmesh":
            manifest["spec"]["service"]["meshName"] = "global"
        if provider == "apisix":
            await objects.apply(apisix_route(name))
            manifest["spec"]["routeRef"] = {"apiVersion": APISIX_API, "kind": "ApisixRoute", "name": name}
        await objects.apply(manifest)
        names.append(name)
    await setup_target(objects, "DaemonSet", "ds")
    await objects.apply(canary("ds", "DaemonSet"))
    names.append("ds")

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scaled-secret", "namespace": NS}}
    await objects.apply({**secret, "data": {"TOKEN": "c2VjcmV0"}})
    scaled = workload("Deployment", "scaled")
    scaled["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"secretRef": {"name": "scaled-secret"}}
    ]
    await objects.apply(scaled)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 2,
            "maxReplicas": 4,
        },
    }
    await objects.apply(hpa)
    manifest = autoscaled(canary("scaled"), "HorizontalPodAutoscaler")
    manifest["spec"]["revertOnDeletion"] = True
    await objects.apply(manifest)
    names.append("scaled")

    await setup_target(objects, "Deployment", "keda")
    trigger = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "keda", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "keda"}, "triggers": [trigger]},
    }
    await objects.apply(scaled_object)
    await objects.apply(autoscaled(canary("keda"), "ScaledObject"))
    names.append("keda")

    for name in [*names, "kn"]:
        await wait_phase(objects, name, "Initialized", timeout=30)
    await new_knative_revision(objects, "kn", "kn-00002")
    for name in names:
        target = await objects.get("apps/v1", "DaemonSet" if name == "ds" else "Deployment", NS, name)
        assert target is not None
        container = target["spec"]["template"]["spec"]["containers"][0]
        container["image"] = "app:v2"
        await objects.apply({k: target[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    for name in [*names, "kn"]:
        done = await wait_phase(objects, name, "Succeeded", "Failed", timeout=60)
        assert done["status"]["phase"] == "Succeeded", (name, done["status"])
    # The Knative rollout ended with the new revision as the primary, serving everything.
    service = await objects.get(KNATIVE_API, "Service", NS, "kn")
    assert service is not None
    assert service["metadata"]["annotations"]["flagger.app/primary-revision"] == "kn-00002"
    traffic = {t.get("revisionName", "latest"): t["percent"] for t in service["spec"]["traffic"]}
    assert traffic == {"latest": 0, "kn-00002": 100}

    await objects.delete(API_VERSION, "Canary", NS, "scaled")

    async def deleted() -> bool:
        return await objects.get(API_VERSION, "Canary", NS, "scaled") is None

    await wait_for(deleted, what="revertOnDeletion to finish")


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
async def test_chart_rbac_grants_exactly_what_the_operator_uses(
    scope: str,
    emulator: kmock.KubernetesEmulator,
    kube_api: client.ApiClient,  # noqa: F811
    objects: KubeObjects,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
    start_operator: StartOperator,  # noqa: F811
    helm: str,  # noqa: F811
) -> None:
    kube_api.user_agent = TESTS_USER_AGENT
    recorder = RecordingEmulator(emulator)
    if scope == "cluster":
        key: tuple[str, str | None] = ("kopf.dev/v1/clusterkopfpeerings", None)
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "canaryctl"},
        }
    else:
        key = ("kopf.dev/v1/kopfpeerings", NS)
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "canaryctl", "namespace": NS},
        }
    emulator.objects[(*key, "canaryctl")] = peering
    namespaces = (NS,) if scope == "namespace" else ()
    running = await start_operator(peering="canaryctl", namespaces=namespaces)
    await drive_every_router_to_promotion(objects)
    await asyncio.sleep(0.5)  # the last ticks' writes

    # A status write that meets another writer's change reads the Canary again (the API server's 409):
    # a race in a run this short, so made to happen here.
    stale = await objects.get(API_VERSION, "Canary", NS, "ds")
    assert stale is not None
    labels = {"metadata": {"labels": {"team": "a"}}}
    path = resource_path(API_VERSION, "Canary", NS, "ds")
    await objects.request("PATCH", path, labels, "application/merge-patch+json")
    await running.operator._store(stale, {**stale["status"], "message": "written after a conflict"})

    # The catalog reads a MetricTemplate or AlertProvider itself when its watch has not delivered it yet.
    provider = {
        "apiVersion": API_VERSION,
        "kind": "AlertProvider",
        "metadata": {"name": "team", "namespace": NS},
    }
    await objects.apply({**provider, "spec": {"type": "generic", "address": "http://127.0.0.1:9/"}})
    catalog = running.operator.catalog
    await wait_for(lambda: _known(catalog.providers, "team"), what="the AlertProvider to be watched")

    async def reported() -> bool:  # its Ready condition written, and that write's own event seen
        stored = await objects.get(API_VERSION, "AlertProvider", NS, "team") or {}
        return bool((stored.get("status") or {}).get("conditions"))

    await wait_for(reported, what="the AlertProvider's Ready condition")
    await asyncio.sleep(1.0)
    catalog.templates.clear()
    catalog.providers.clear()
    assert (await catalog.template("success", NS)).metadata.name == "success"
    assert await catalog.notifier("team", NS) is not None

    rules = granted(helm, scope)
    used = recorder.calls
    unused = sorted(rules - used - set(IMPLIED))
    refused = sorted(used - rules)
    print("used:", "\n  ".join(f"{g or 'core'} {r} {v}" for g, r, v in sorted(used)))
    assert not unused, f"granted but never used: {unused}"
    assert not refused, f"used but not granted: {refused}"


async def _known(store: dict[tuple[str, str], Any], name: str) -> bool:
    return (NS, name) in store
