"""Flagger's scheduler test fixture (``pkg/controller/scheduler_*_fixture_test.go``) rebuilt over canaryctl.

Flagger's tests seed a fake clientset with a ``podinfo`` Deployment or DaemonSet, its ConfigMaps and
Secrets, an HPA, MetricTemplates and an AlertProvider, then call ``advanceCanary`` once per analysis
interval and read the Canary status and the Istio routes back. ``Scheduler`` does the same against
canaryctl: the objects live in kmock's Kubernetes emulator, every tick is ``runner.tick`` with the
operator's real ports (``KubeWorkloads``, the Istio router, the metrics analyzer against a loopback
Prometheus answering 100 to every query as Flagger's test server does, webhooks, alerts, v1 Events),
and the status is stored in the Canary's status subresource as the operator stores it.

The one thing the emulator lacks is the workload controllers: ``ready`` names the workloads whose
controller reports them rolled out (Flagger's ``makePrimaryReady``/``makeCanaryReady``).

``advance()`` is one call of Flagger's ``advanceCanary``: one analysis interval, in which canaryctl ticks
as often as its engine asks (an instant step, a one-second promotion poll) on a simulated clock.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import pytest_asyncio
from aiohttp import web

from canaryctl.api.models import API_VERSION, Canary, CanaryStatus, Phase
from canaryctl.engine.types import RouteState
from canaryctl.operator.adapters import OperatorObjects
from canaryctl.operator.handlers import MIN_REQUEUE_SECONDS, RETRY_SECONDS, CanaryOperator, OperatorConfig
from canaryctl.operator.patching import merge_patch
from canaryctl.ports import Events
from canaryctl.runner import Ports, tick
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl_mesh.kube import api_client_for_host
from tests.kube.cluster import workload_status
from tests.kube.emulator import emulator_url, running_emulator
from tests.operator.helpers import collapsed

Obj = dict[str, Any]
NS = "default"
START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_TICKS_PER_INTERVAL = 200
ISTIO = "networking.istio.io/v1beta1"
VIRTUAL_SERVICES = f"{ISTIO}/virtualservices"
PLURALS = {"Deployment": "apps/v1/deployments", "DaemonSet": "apps/v1/daemonsets"}


# --- Flagger's fixture objects -------------------------------------------------------------------------


def _meta(name: str) -> Obj:
    return {"name": name, "namespace": NS}


def config_map(name: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name), "data": data}


def secret(name: str, **data: str) -> Obj:
    """As an API server stores it: ``data`` base64-encoded."""
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name), "type": "Opaque", "data": encoded}


def secret_value(obj: Obj, key: str) -> str:
    return base64.b64decode(obj["data"][key]).decode()


def pod_template(version: str) -> Obj:
    """newDeploymentTestDeployment (v1: three ports, secret envFrom) or ...DeploymentV2 (one port)."""
    env = [
        {
            "name": "PODINFO_UI_COLOR",
            "valueFrom": {"configMapKeyRef": {"name": "podinfo-config-env", "key": "color"}},
        },
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "podinfo-secret-env", "key": "apiKey"}}},
    ]
    env_from: list[Obj] = [{"configMapRef": {"name": "podinfo-config-all-env"}}]
    ports: list[Obj] = [{"name": "http", "containerPort": 9898, "protocol": "TCP"}]
    if version == "1.2.0":
        env_from.append({"secretRef": {"name": "podinfo-secret-all-env"}})
        ports += [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8888}]
    container = {
        "name": "podinfo",
        "image": f"quay.io/stefanprodan/podinfo:{version}",
        "command": ["./podinfo", "--port=9898"],
        "ports": ports,
        "env": env,
        "envFrom": env_from,
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/podinfo/config", "readOnly": True},
            {"name": "secret", "mountPath": "/etc/podinfo/secret", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": "podinfo-config-vol"}},
        {"name": "secret", "secret": {"secretName": "podinfo-secret-vol"}},
    ]
    return {
        "metadata": {"labels": {"app": "podinfo"}},
        "spec": {"containers": [container], "volumes": volumes},
    }


def workload(kind: str, version: str = "1.2.0") -> Obj:
    spec = {"selector": {"matchLabels": {"app": "podinfo"}}, "template": pod_template(version)}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": _meta("podinfo"), "spec": spec}


def target_service(app: str = "podinfo") -> Obj:
    """newDeploymentTestService / ...ServiceV2: the target of the Service canaries."""
    port = {"name": "http", "port": 9898, "protocol": "TCP", "targetPort": "http"}
    spec = {"selector": {"app": app}, "type": "ClusterIP", "ports": [port]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta("podinfo"), "spec": spec}


HPA: Obj = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": _meta("podinfo"),
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "maxReplicas": 4,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}},
            }
        ],
    },
}

CONFIGS = [
    config_map("podinfo-config-env", color="red"),
    config_map("podinfo-config-all-env", color="red"),
    config_map("podinfo-config-vol", color="red"),
    secret("podinfo-secret-env", apiKey="test", username="test", password="test"),
    secret("podinfo-secret-all-env", apiKey="test"),
    secret("podinfo-secret-vol", apiKey="test"),
]
CONFIG_MAP_V2 = config_map("podinfo-config-env", color="blue", output="console")
SECRET_V2 = secret("podinfo-secret-env", apiKey="test2", username="test", password="test")


def metric_template(name: str, query: str, address: str) -> Obj:
    provider = {"type": "prometheus", "address": address, "secretRef": {"name": "podinfo-secret-env"}}
    return {
        "apiVersion": API_VERSION,
        "kind": "MetricTemplate",
        "metadata": _meta(name),
        "spec": {"provider": provider, "query": query},
    }


ALERT_PROVIDER: Obj = {
    "apiVersion": API_VERSION,
    "kind": "AlertProvider",
    "metadata": _meta("slack"),
    "spec": {"type": "slack", "address": "http://fake.slack", "secretRef": {"name": "alert-secret"}},
}

METRICS: list[Obj] = [
    {"name": "request-success-rate", "threshold": 99, "interval": "1m"},
    {"name": "request-duration", "thresholdRange": {"min": 0, "max": 500000}, "interval": "1m"},
    {
        "name": "custom",
        "thresholdRange": {"min": 0, "max": 100},
        "interval": "1m",
        "templateRef": {"name": "envoy", "namespace": NS},
    },
]
FAILING_METRIC: Obj = {
    "name": "fail",
    "interval": "1m",
    "thresholdRange": {"min": 0, "max": 50},
    "query": "fail",
}


def canary(kind: str = "Deployment", **analysis: Any) -> Obj:
    """newDeploymentTestCanary / newDaemonSetTestCanary: stepWeight 10 up to 50, threshold 10."""
    spec: Obj = {
        "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"threshold": 10, "stepWeight": 10, "maxWeight": 50, "metrics": METRICS} | analysis,
    }
    if kind == "Deployment":
        spec["autoscalerRef"] = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "name": "podinfo",
        }
    return {"apiVersion": API_VERSION, "kind": "Canary", "metadata": _meta("podinfo"), "spec": spec}


def ab_canary(kind: str = "Deployment") -> Obj:
    """newDeploymentTestCanaryAB: ten iterations for requests with ``x-user-type: test``."""
    match = [{"headers": {"x-user-type": {"exact": "test"}}}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99, "max": 100}, "interval": "1m"},
        {"name": "request-duration", "threshold": 500000, "interval": "1m"},
        {
            "name": "custom",
            "thresholdRange": {"min": 0, "max": 500000},
            "interval": "1m",
            "templateRef": {"name": "envoy", "namespace": NS},
            "query": "fake",
        },
    ]
    manifest = canary(kind)
    manifest["spec"]["analysis"] = {"threshold": 10, "iterations": 10, "match": match, "metrics": metrics}
    return manifest


def service_canary(**analysis: Any) -> Obj:
    """newTestServiceCanary and its variants: a core/v1 Service target, traffic only."""
    metrics = [
        {"name": "request-success-rate", "threshold": 99, "interval": "1m"},
        {"name": "request-duration", "threshold": 500000, "interval": "1m"},
    ]
    spec = {
        "targetRef": {"apiVersion": "v1", "kind": "Service", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"threshold": 10, "metrics": metrics} | analysis,
    }
    return {"apiVersion": API_VERSION, "kind": "Canary", "metadata": _meta("podinfo"), "spec": spec}


# --- the controller ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Routes:
    primary: int
    canary: int
    mirrored: bool


def _routes_of(service: Obj, name: str) -> Routes:
    """The weights of the first HTTP route (the A/B route when there is one), and whether it mirrors."""
    first = service["spec"]["http"][0]
    weights = {route["destination"]["host"]: route["weight"] for route in first["route"]}
    return Routes(weights[f"{name}-primary"], weights[f"{name}-canary"], "mirror" in first)


@dataclass
class Scheduler:
    emulator: kmock.KubernetesEmulator
    operator: CanaryOperator
    name: str = "podinfo"
    now: datetime = START
    ready: set[str] = field(default_factory=set)
    nodes: int = 1
    history: list[CanaryStatus] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events_override: Events | None = None  # another Events backend than the operator's v1 Events

    @property
    def objects(self) -> OperatorObjects:
        return self.operator.objects

    # -- Flagger's fixture helpers --

    def make_ready(self, name: str) -> None:
        self.ready.add(name)

    def make_primary_ready(self) -> None:
        self.make_ready(f"{self.name}-primary")

    def make_canary_ready(self) -> None:
        self.make_ready(self.name)

    def make_primary_not_ready(self, kind: str = "Deployment") -> None:
        """Flagger's makePrimaryNotReady: a stuck rollout, the progress deadline exceeded."""
        name = f"{self.name}-primary"
        self.ready.discard(name)
        stored = self.emulator.objects[PLURALS[kind], NS, name]
        status = {
            "observedGeneration": stored.raw["metadata"].get("generation", 1),
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 0,
            "availableReplicas": 0,
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            ],
        }
        stored.patch({"status": status})

    def _run_workload_controllers(self) -> None:
        for resource in PLURALS.values():
            for name in self.ready:
                try:
                    stored = self.emulator.objects[resource, NS, name]
                except KeyError:
                    continue
                if stored.deleted:
                    continue
                status = workload_status(stored.raw, self.nodes)
                status["observedGeneration"] = stored.raw["metadata"].get("generation", 1)
                if stored.raw.get("status") != status:
                    stored.patch({"status": status})

    # -- the Kubernetes API, as the tests' clients use it --

    async def apply(self, obj: Obj) -> None:
        await self.objects.apply(copy.deepcopy(obj))

    async def get(self, api_version: str, kind: str, name: str) -> Obj:
        found: Obj | None = await self.objects.get(api_version, kind, NS, name)
        assert found is not None, f"{kind} {NS}/{name} not found"
        return found

    async def canary_body(self) -> Obj:
        return await self.get(API_VERSION, "Canary", self.name)

    async def status(self) -> CanaryStatus:
        return CanaryStatus.model_validate((await self.canary_body()).get("status") or {})

    async def phase(self) -> Phase | None:
        return (await self.status()).phase

    async def edit_analysis(self, **changes: Any) -> None:
        body = await self.canary_body()
        manifest = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")}
        manifest["spec"]["analysis"] |= changes
        await self.apply(manifest)

    async def edit_spec(self, **changes: Any) -> None:
        body = await self.canary_body()
        manifest = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")}
        manifest["spec"] |= changes
        await self.apply(manifest)

    async def sync_status(self, **fields: Any) -> None:
        """Flagger's ``deployer.SyncStatus``/``SetStatusPhase``: write the status directly."""
        await self.objects.patch_status("Canary", NS, self.name, fields)

    async def routes(self) -> Routes:
        """Flagger's ``router.GetRoutes``."""
        return _routes_of(await self.get(ISTIO, "VirtualService", self.name), self.name)

    def route_history(self) -> list[Routes]:
        """Every version of the apex VirtualService the emulator stored, oldest first, repeats folded."""
        versions = self.emulator.objects[VIRTUAL_SERVICES, NS, self.name].history
        return collapsed(
            [_routes_of(dict(version), self.name) for version in versions if version is not None]
        )

    def event_messages(self) -> list[str]:
        """The messages of the v1 Events recorded on the Canary, in the order they were created."""
        found = []
        for key in list(self.emulator.objects):
            resource, namespace, _ = key
            obj = self.emulator.objects[key]
            ours = resource.plural == "events" and namespace == NS and not obj.deleted
            if ours and obj.raw["involvedObject"]["name"] == self.name:
                found.append((obj.raw["metadata"]["resourceVersion"], obj.raw["message"]))
        return [message for _, message in sorted(found, key=lambda item: int(item[0]))]

    async def set_routes(self, canary_weight: int) -> None:
        """Flagger's ``router.SetRoutes``, with the status weight canaryctl keeps in step with it."""
        canary = Canary.model_validate(await self.canary_body())
        await self.ports(canary).router.apply(canary, RouteState(canary_weight=canary_weight))
        await self.sync_status(canaryWeight=canary_weight)

    # -- the scheduler --

    def ports(self, canary: Canary) -> Ports:
        ports = self.operator.ports(canary)
        if self.events_override is not None:
            ports = Ports(**{**ports.__dict__, "events": self.events_override})
        return ports

    async def tick(self) -> float:
        """One operator iteration at the simulated time; returns the seconds until the next one."""
        self._run_workload_controllers()
        body = await self.canary_body()
        canary = Canary.model_validate(body)
        try:
            decision = await tick(canary, self.ports(canary), now=self.now)
        except Exception as exc:  # as the operator: nothing stored, the same tick again after a pause
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return RETRY_SECONDS
        await self.objects.patch_status(
            "Canary", NS, self.name, merge_patch(body.get("status") or {}, decision.status.to_wire())
        )
        self.history.append(decision.status)
        self.operator.metrics.record_tick(canary, canary.model_copy(update={"status": decision.status}), 0.0)
        return max(decision.requeue_after, MIN_REQUEUE_SECONDS)

    async def advance(self) -> None:
        """One ``advanceCanary``: every tick the engine asks for within one analysis interval."""
        canary = Canary.model_validate(await self.canary_body())
        end = self.now + timedelta(seconds=canary.spec.effective_analysis.interval_seconds)
        for _ in range(MAX_TICKS_PER_INTERVAL):
            self.now += timedelta(seconds=await self.tick())
            if self.now >= end:
                return
        raise AssertionError(f"more than {MAX_TICKS_PER_INTERVAL} ticks in one interval")

    def phases(self) -> list[Phase | None]:
        """The phases the stored status went through, repeats folded."""
        return collapsed([status.phase for status in self.history])


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    """Without a request log: hundreds of ticks per test, each matched against the log, are slow."""
    async with running_emulator(keep_requests=False) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a random loopback port, for the receivers of webhooks and alerts; yields its URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def new_scheduler(emulator: kmock.KubernetesEmulator, prometheus_url: str) -> Scheduler:
    # Ticks run one by one right after in-process writes: every read goes to the emulator.
    config = OperatorConfig(
        peering=None, prometheus_url=prometheus_url, default_provider="istio", watch_cache=False
    )
    operator = CanaryOperator(config, api_client_for_host(emulator_url(emulator)), ControllerMetrics())
    return Scheduler(emulator, operator)


async def seed(scheduler: Scheduler, prometheus_url: str, *objs: Obj) -> None:
    """newDeploymentFixture: the shared objects plus the given target and Canary."""
    envoy = 'sum(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ target }}"})'
    custom = envoy.replace('"})', '",custom_label!="{{ variables.second }}"})')
    templates = [
        metric_template("envoy", envoy, prometheus_url),
        metric_template("custom-vars", custom, prometheus_url),
    ]
    for obj in [
        *CONFIGS,
        secret("alert-secret", address="http://fake.slack"),
        *templates,
        ALERT_PROVIDER,
        *objs,
    ]:
        await scheduler.apply(obj)
