"""A kind cluster with canaryctl installed, for the e2e scenarios on real Kubernetes.

pytest-kind creates the cluster (downloading the kind binary unless one is on PATH); this module builds
the repository's image, loads it into the cluster, installs a small Prometheus and the chart, and gives
the tests typed helpers: namespaces, the demo app as a Deployment, the load tester, Canary phases.
Docker is checked before anything is fetched, so a machine without it skips with one reason.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from kubernetes import client, config
from pytest_kind import KindCluster

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "canaryctl.kind"
TAG = "kind"
ROLES = ("controller", "meshd", "sidecar", "loadtester")


def image(role: str) -> str:
    return f"{REGISTRY}/{role}:{TAG}"


RELEASE = "canaryctl"
RELEASE_NAMESPACE = "canaryctl"
PROMETHEUS_URL = "http://prometheus.monitoring:9090"
INJECT_LABEL = "mesh.canaryctl.dev/inject"
GATEWAY_API_CRDS = (
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml"
)
APP_PORT = 9898
GROUP, VERSION = "canaryctl.dev", "v1beta1"
POLL_SECONDS = 2.0

T = TypeVar("T")


def unavailable() -> str | None:
    """Why the kind suite cannot run here, or None. Docker first: nothing is downloaded without it."""
    try:
        subprocess.run(["docker", "info"], check=True, capture_output=True, timeout=30)
    except FileNotFoundError:
        return "kind e2e needs Docker: the docker CLI is not installed"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "kind e2e needs Docker: `docker info` failed (no reachable Docker engine)"
    if tool("helm") is None:
        return "kind e2e needs helm: run `make tools` (installs .tools/bin/helm) or put helm on PATH"
    return None


def tool(name: str) -> Path | None:
    """A binary from `make tools` (.tools/bin), else from PATH."""
    local = REPO / ".tools" / "bin" / name
    found = local if local.exists() else shutil.which(name)
    return Path(found) if found else None


def wait_until(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Poll ``probe`` until it returns a value; bounded in time and in attempts."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_SECONDS) + 1):
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{what} within {timeout:.0f}s")


@dataclass
class Cluster:
    kind: KindCluster

    def __post_init__(self) -> None:
        api = config.new_client_from_config(str(self.kind.kubeconfig_path))  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def kubectl(self, *args: str) -> str:
        return str(self.kind.kubectl(*args))

    def install(self) -> None:
        """Image, Prometheus, chart: what every scenario needs."""
        for role in ROLES:
            dockerfile = REPO / "docker" / f"{role}.Dockerfile"
            subprocess.run(
                ["docker", "build", "-f", str(dockerfile), "-t", image(role), str(REPO)],
                check=True,
                timeout=1800,
            )
            self.kind.load_docker_image(image(role))
        self.kubectl("apply", "-f", str(Path(__file__).parent / "manifests" / "prometheus.yaml"))
        helm = str(tool("helm"))
        subprocess.run(
            [helm, "upgrade", "--install", RELEASE, str(REPO / "charts" / "canaryctl"),
            "--namespace", RELEASE_NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m",
            "--set", f"image.registry={REGISTRY}", "--set", f"image.tag={TAG}",
            "--set", "image.pullPolicy=Never", "--set", f"controller.prometheusUrl={PROMETHEUS_URL}",
            "--kubeconfig", str(self.kind.kubeconfig_path)],
            check=True, timeout=600,
        )  # fmt: skip
        self.kubectl("rollout", "status", "deployment/prometheus", "-n", "monitoring", "--timeout=5m")

    def install_gateway_api(self) -> None:
        self.kubectl("apply", "--server-side", "-f", GATEWAY_API_CRDS)
        self.kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io")

    def namespace(self, name: str, meshed: bool) -> str:
        labels = {INJECT_LABEL: "enabled"} if meshed else {}
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        self.core.create_namespace(body)
        return name

    def deploy(self, namespace: str, name: str, args: list[str], port: int, scraped: bool) -> None:
        """A Deployment running ``canaryctl ARGS`` (demo-app or loadtester) from the controller image."""
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)} if scraped else {}
        container = client.V1Container(
            name=name,
            image=image("controller"),
            command=["canaryctl"],
            image_pull_policy="Never",
            args=args,
            ports=[client.V1ContainerPort(container_port=port, name="http")],
            readiness_probe=client.V1Probe(tcp_socket=client.V1TCPSocketAction(port=port)),
        )
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": name}, annotations=annotations),
            spec=client.V1PodSpec(containers=[container]),
        )
        spec = client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": name}), template=template
        )
        body = client.V1Deployment(metadata=client.V1ObjectMeta(name=name), spec=spec)
        self.apps.create_namespaced_deployment(namespace, body)

    def deploy_loadtester(self, namespace: str) -> str:
        """Flagger's layout: a load tester in the canary's namespace (meshed with it when meshed)."""
        self.deploy(namespace, "loadtester", ["loadtester", "--port", "8080"], 8080, scraped=False)
        port = client.V1ServicePort(port=80, target_port=8080, name="http")
        service = client.V1Service(
            metadata=client.V1ObjectMeta(name="loadtester"),
            spec=client.V1ServiceSpec(selector={"app": "loadtester"}, ports=[port]),
        )
        self.core.create_namespaced_service(namespace, service)
        self.kubectl("rollout", "status", "deployment/loadtester", "-n", namespace, "--timeout=3m")
        return f"http://loadtester.{namespace}/"

    def set_args(self, namespace: str, name: str, args: list[str]) -> None:
        """A new pod template: the new revision the Canary rolls out."""
        patch = {"spec": {"template": {"spec": {"containers": [{"name": name, "args": args}]}}}}
        self.apps.patch_namespaced_deployment(name, namespace, patch)

    def apply_canary(self, namespace: str, canary: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "canaries", canary)

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "canaries", name)
        return dict(cast(dict[str, Any], found).get("status") or {})

    def wait_phase(self, namespace: str, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        """The Canary's status once its phase is one of ``phases``; every status seen is kept."""

        def reached() -> dict[str, Any] | None:
            status = self.status(namespace, name)
            return status if status.get("phase") in phases else None

        return wait_until(f"{namespace}/{name} did not reach {sorted(phases)}", reached, timeout)
